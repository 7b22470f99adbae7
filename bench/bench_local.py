"""Harness overhead on local mode: plain commands vs `pytest -k spread --ray-modes local`.

Both sides do the same work in one run: start a one-node Ray head, run the spread counter from
outside (Ray Client) and inside (RAY_ADDRESS), stop the head. The baseline stops its head the
way the harness does (SIGTERM to its process group, SIGKILL after the same grace), never with
`ray stop`, which would kill every Ray on the machine. Both run the suite's own counter with the
same rounds and SPREAD tasks. Prints the ratio; target <= 1.10.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import save

from fixtures.clients import run_retrying_flakes
from fixtures.offline import run_offline
from provisioners.contract.base import Timeouts
from provisioners.deployers.raystart import STOP_GRACE_S
from provisioners.util.processes import env_with_interpreter_first, kill_all, ray_cli, run_processes
from provisioners.util.relay import free_port
from provisioners.util.runner import run_full
from provisioners.util.waits import urlopen_ok, wait_for
from suites.test_spread import spread_source

#: Bound of one baseline step or of the whole pytest run (a generous one on 2 cores).
STEP_TIMEOUT_S = 600.0

ROOT = Path(__file__).resolve().parents[1]

TARGET = 1.10
#: The counter both sides run: the suite's rounds and a small SPREAD load.
ITERATIONS, TASKS = 3, 30


def _run(argv: list[str], env: dict[str, str]) -> None:
    # Same rule as the harness: only Ray's known client-server crash is run again.
    proc, _ = run_retrying_flakes(argv, STEP_TIMEOUT_S, env)
    if proc.returncode == 0:
        return
    sys.exit(
        f"baseline step failed: {' '.join(argv)}\n{proc.note}{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


def baseline(workdir: Path) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "spread.py"
    script.write_text(spread_source(ITERATIONS, TASKS, Timeouts().job))
    gcs, dash, client = free_port(), free_port(), free_port()
    env = env_with_interpreter_first()
    t0 = time.monotonic()
    head = subprocess.Popen(
        [
            str(ray_cli()),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={client}",
            f"--temp-dir=/tmp/rc-bench-{os.getpid()}",
            "--num-cpus=1",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        wait_for(
            lambda: urlopen_ok(f"http://127.0.0.1:{dash}/api/version"),
            timeout=180,
            what="baseline head",
        )
        _run([sys.executable, str(script), f"ray://127.0.0.1:{client}"], env)
        _run([sys.executable, str(script)], {**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"})
    finally:
        head.send_signal(signal.SIGTERM)  # as the harness stops its nodes
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=STOP_GRACE_S)
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        # Some Ray processes leave the group; they are ours by the temp dir in their args.
        marker = f"/tmp/rc-bench-{os.getpid()}"
        kill_all(run_processes(marker=marker))
        shutil.rmtree(marker, ignore_errors=True)
    return time.monotonic() - t0


def harness(workdir: Path) -> float:
    t0 = time.monotonic()
    proc = run_full(
        [
            sys.executable,
            "-m",
            "pytest",
            "suites",
            "--ray-modes=local",
            "--ray-workers=0",
            "-k",
            "spread and not at_once",
            f"--ray-spread-iterations={ITERATIONS}",
            f"--ray-spread-tasks={TASKS}",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--ray-report-dir={workdir / 'report'}",
        ],
        STEP_TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"pytest failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    # Interleaved rounds and medians: one sample of a 25 s workload on 2 cores swings 15%.
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    rounds = parser.parse_args().rounds
    bases: list[float] = []
    ours: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            bases.append(baseline(Path(tmp) / f"b{i}"))
            ours.append(harness(Path(tmp) / f"h{i}"))
            print(f"round {i + 1}: baseline {bases[-1]:.1f} s, pytest {ours[-1]:.1f} s", flush=True)
    base, mine = statistics.median(bases), statistics.median(ours)
    ratio = mine / base
    print(f"baseline (ray start, spread outside+inside, stop): median {base:.1f} s")
    print(f"pytest --ray-modes local -k spread:               median {mine:.1f} s")
    print(f"ratio: {ratio:.2f} (target <= {TARGET}) {'OK' if ratio <= TARGET else 'OVER TARGET'}")
    what = "pytest -k spread (provision, counter outside and inside, teardown) vs ray start, the same two scripts, stop"
    save(
        "bench_local",
        {
            "local": {
                "overhead": round(ratio, 3),
                "overhead_harness_s": round(mine, 1),
                "overhead_raw_s": round(base, 1),
                "overhead_what": what,
            }
        },
    )


if __name__ == "__main__":
    raise SystemExit(run_offline(main))
