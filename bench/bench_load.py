"""Load through the forward: the harness's spread counter beside a plain Ray script, same cluster.

    .venv/bin/python bench/bench_load.py [--modes docker,vm,kind-operator] [--tasks 10000]
                                         [--sessions 8] [--rounds 1]

Per mode: the mode's provisioner makes head + 2 workers, one forward of the client port is
opened, and on that one forward, in turn:
  * the harness: ``pytest suites/test_spread.py`` (the check from outside and the concurrency
    check) on the ``external`` mode with ``--ray-client-url`` at the forward, so its scripts
    take the same route; its throughput is the one the checks record in results.json;
  * plain: a plain Ray script doing the same work (the same SPREAD tasks, all submitted at
    once, timed from the first submission to the last result), alone and as the same number
    of sessions at once, each with the same share of the tasks.
Prints each throughput and harness / plain (target >= 0.9); then each node's peak memory
(its cgroup's, read by a task pinned to it after the load) and the pytest process's peak RSS.
Modes run one after the other, never side by side (two cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import MIB, save
from peak_memory import ENV as PEAK_ENV

from fixtures.clients import run_retrying_flakes
from provisioners.contract.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    ClusterSpec,
    Provisioner,
    Timeouts,
)
from provisioners.contract.registry import discover
from provisioners.util.nodeimage import IMAGE_BUILD
from provisioners.util.runner import run_full

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.9
WORKERS = 2
#: Bound of one script or one pytest run (a real load on 2 cores, kind's Ray Client included).
STEP_TIMEOUT_S = 900.0
SUITE = "suites/test_spread.py"
CHECKS = {
    "test_spread_from_outside_every_node_runs_work": "spread_outside_load",
    "test_spread_client_sessions_at_once_all_run_the_counter": "sessions_load",
}

PLAIN = """
import json, os, sys, time
import ray

@ray.remote
def load():
    return ray.get_runtime_context().get_node_id()

address, tasks = sys.argv[1], int(sys.argv[2])
ray.init(address, logging_level="ERROR", log_to_driver=False)
if len(sys.argv) > 4:  # one of N sessions: send work once all are connected
    barrier, sessions = sys.argv[3], int(sys.argv[4])
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    t0 = time.monotonic()
    while len(os.listdir(barrier)) < sessions and time.monotonic() - t0 < 300:
        time.sleep(0.1)
start = time.time()
done = len(ray.get([load.options(scheduling_strategy="SPREAD").remote() for _ in range(tasks)]))
print("PLAIN " + json.dumps({"done": done, "start": start, "end": time.time()}))
"""

NODE_MEMORY = """
import json, socket, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

@ray.remote(num_cpus=0)
def peak():
    value = None
    for path in ("/sys/fs/cgroup/memory.peak", "/sys/fs/cgroup/memory/memory.max_usage_in_bytes"):
        try:
            value = int(open(path).read())
            break
        except (OSError, ValueError):
            pass
    lines = open("/proc/self/cgroup").read().splitlines()
    group = next((l for l in lines if ":memory:" in l), lines[-1] if lines else "")
    return {"host": socket.gethostname(), "peak_bytes": value, "cgroup": group.split(":", 2)[-1]}

ray.init(sys.argv[1], logging_level="ERROR", log_to_driver=False)
out = {}
for n in ray.nodes():
    if n["Alive"]:
        pin = NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
        out[n["NodeID"]] = ray.get(peak.options(scheduling_strategy=pin).remote(), timeout=120)
print("NODES " + json.dumps(out))
"""


def line(output: str, tag: str) -> Any:
    for text in reversed(output.splitlines()):
        if text.startswith(tag + " "):
            return json.loads(text[len(tag) + 1 :])
    raise RuntimeError(f"no {tag} line in:\n{output[-3000:]}")


def script(source: str, workdir: Path, *args: str) -> str:
    """Run a plain Ray Client script; Ray's known client flakes are run again, as the harness does."""
    path = workdir / f"s{uuid.uuid4().hex[:6]}.py"
    path.write_text(source)
    done, _ = run_retrying_flakes([sys.executable, str(path), *args], STEP_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(
            f"{path.name} exited {done.returncode}:\n{done.note or done.stderr[-3000:]}"
        )
    return done.stdout


def plain(address: str, tasks: int, sessions: int, workdir: Path) -> float:
    """tasks/s of the plain script: alone (sessions=1), or sessions at once sharing the tasks."""
    if sessions == 1:
        result = line(script(PLAIN, workdir, address, str(tasks)), "PLAIN")
        return float(result["done"] / (result["end"] - result["start"]))
    barrier = Path(tempfile.mkdtemp(dir=workdir))
    share = str(max(1, tasks // sessions))
    args = [address, share, str(barrier), str(sessions)]
    with ThreadPoolExecutor(max_workers=sessions) as pool:
        outs = list(pool.map(lambda _: script(PLAIN, workdir, *args), range(sessions)))
    results = [line(out, "PLAIN") for out in outs]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return float(sum(r["done"] for r in results) / span)


def harness(
    address: str, dashboard: str, args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, float], int]:
    """tasks/s each check recorded, and the pytest process's peak RSS in bytes."""
    report = Path(tempfile.mkdtemp(dir=workdir, prefix="report-"))
    peaks = report / "peak.jsonl"
    proc = run_full(
        [
            sys.executable,
            "-m",
            "pytest",
            SUITE,
            "-k",
            "from_outside or at_once",
            "-p",
            "peak_memory",
            "-p",
            "no:cacheprovider",
            "-q",
            "--ray-modes=external",
            f"--ray-address={address}",
            f"--ray-client-url={address}",
            f"--ray-dashboard-url={dashboard}",
            f"--ray-expect-nodes={1 + WORKERS}",
            f"--ray-spread-tasks={args.tasks}",
            f"--ray-client-sessions={args.sessions}",
            f"--ray-job-timeout={args.job_timeout}",
            f"--ray-report-dir={report}",
        ],
        STEP_TIMEOUT_S,
        cwd=ROOT,
        check=False,
        env={"PYTHONPATH": str(Path(__file__).resolve().parent), PEAK_ENV: str(peaks)},
    )
    doc = json.loads((report / "results.json").read_text())
    rates: dict[str, float] = {}
    for result in doc["results"]:
        key = CHECKS.get(result["check"])
        if key is None:
            continue
        if result["outcome"] != "passed":
            raise RuntimeError(f"{result['check']} {result['outcome']}: {result['message']}")
        rates[key] = float(result["properties"][key]["tasks_per_s"])
    if proc.returncode != 0 or len(rates) != len(CHECKS):
        raise RuntimeError(f"pytest exited {proc.returncode}:\n{proc.stdout[-3000:]}")
    peak = max(json.loads(x)["peak_rss_bytes"] for x in peaks.read_text().splitlines())
    return rates, peak


def node_memory(address: str, workdir: Path) -> dict[str, Any]:
    """Each node's peak memory (its own cgroup's), or None where nodes share one cgroup."""
    nodes = line(script(NODE_MEMORY, workdir, address), "NODES")
    groups = [n["cgroup"] for n in nodes.values()]
    shared = len(set(groups)) < len(groups)
    return {
        n["host"]: None if shared or n["peak_bytes"] is None else round(n["peak_bytes"] / MIB)
        for n in nodes.values()
    }


def bench_mode(mode: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    provisioner: Provisioner = discover()[0][mode].create()
    run_id = f"bload{time.time_ns() % 10**7}"
    workdir = root / mode
    workdir.mkdir(parents=True)
    spec = ClusterSpec(
        mode=mode,
        run_id=run_id,
        workdir=workdir,
        workers=WORKERS,
        timeouts=Timeouts(job=args.job_timeout),
        options={IMAGE_BUILD.key: True},  # the node image built here (cached), never pulled
        progress=lambda m: print(f"  [{mode}] {m}", flush=True),
    )
    missing = provisioner.missing_prerequisites(spec)
    if missing:
        raise RuntimeError(f"{mode}: " + "; ".join(missing))
    try:
        provisioner.provision(spec)
        with (
            provisioner.port_forward(CLIENT_PORT) as client,
            provisioner.port_forward(DASHBOARD_PORT) as dash,
        ):
            address, dashboard = f"ray://{client.address}", f"http://{dash.address}"
            rounds: dict[str, list[float]] = {k: [] for k in ("h1", "p1", "hs", "ps")}
            peak = 0
            for i in range(args.rounds):
                rounds["p1"].append(plain(address, args.tasks, 1, workdir))
                rates, peak = harness(address, dashboard, args, workdir)
                rounds["h1"].append(rates["spread_outside_load"])
                rounds["hs"].append(rates["sessions_load"])
                rounds["ps"].append(plain(address, args.tasks, args.sessions, workdir))
                print(
                    f"  [{mode}] round {i + 1}: one session harness {rounds['h1'][-1]:.0f} / "
                    f"plain {rounds['p1'][-1]:.0f} tasks/s; {args.sessions} sessions harness "
                    f"{rounds['hs'][-1]:.0f} / plain {rounds['ps'][-1]:.0f} tasks/s",
                    flush=True,
                )
            nodes = node_memory(address, workdir)
    finally:
        provisioner.teardown()
    left = provisioner.inventory()
    if left:
        raise RuntimeError(f"{mode}: LEFT BEHIND {[str(i) for i in left]}")
    med = {k: statistics.median(v) for k, v in rounds.items()}
    return {
        "load_tasks": args.tasks,
        "load_sessions": args.sessions,
        "load_tasks_per_s": round(med["h1"], 1),
        "load_plain_tasks_per_s": round(med["p1"], 1),
        "load_vs_plain": round(med["h1"] / med["p1"], 3),
        "sessions_tasks_per_s": round(med["hs"], 1),
        "sessions_plain_tasks_per_s": round(med["ps"], 1),
        "sessions_vs_plain": round(med["hs"] / med["ps"], 3),
        "load_harness_peak_mib": round(peak / MIB),
        "node_peak_mib": nodes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--modes", default="docker,vm,kind-operator", help="comma-separated")
    parser.add_argument("--tasks", type=int, default=10000, help="SPREAD tasks (default 10000)")
    parser.add_argument("--sessions", type=int, default=8, help="sessions at once (default 8)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--job-timeout", type=float, default=600.0, help="--ray-job-timeout")
    args = parser.parse_args()
    figures: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="rc-bench-load-") as tmp:
        for mode in [m for m in args.modes.split(",") if m]:
            try:
                figures[mode] = bench_mode(mode, args, Path(tmp))
            except Exception as exc:
                failed[mode] = f"{type(exc).__name__}: {exc}"
                print(f"  [{mode}] FAILED: {failed[mode]}", flush=True)
    print(f"\n{args.tasks} SPREAD tasks on 3 nodes; {args.sessions} sessions share them:")
    for mode, f in figures.items():
        for what, key in (("one session", "load"), (f"{args.sessions} sessions", "sessions")):
            ratio = f[f"{key}_vs_plain"]
            verdict = "ok" if ratio >= TARGET else f"UNDER the {TARGET} target"
            print(
                f"  {mode:<14} {what:<11} harness {f[f'{key}_tasks_per_s']:7.0f} tasks/s, "
                f"plain {f[f'{key}_plain_tasks_per_s']:7.0f}: {ratio:.2f} ({verdict})"
            )
        nodes = ", ".join(
            f"{h} {m} MiB" if m is not None else f"{h} n/a" for h, m in f["node_peak_mib"].items()
        )
        print(f"  {mode:<14} node peak memory: {nodes}; pytest {f['load_harness_peak_mib']} MiB")
    save("bench_load", figures, failed=failed, target_vs_plain=TARGET)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
