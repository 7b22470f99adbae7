"""A real run interrupted while provisioning, during its checks and during its teardown.

Each case is a real ``pytest`` run of one mode sent SIGINT (to its process group, as Ctrl-C in
a terminal) or SIGTERM (to pytest, as a CI runner's cancel) at one of the three points. The run
must tear down, say "interrupted" naming what it removed, write its report and exit non-zero;
signals during the teardown are answered with what is still being removed and do not cut it
short. Then nothing of the run is left: looked up here by label, environment and the run's
notes, and by the sweep's dry run.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from leftovers import labeled, processes, rules, run_argv, start_run, sweep

from provisioners.contract.base import RUN_ID_LABEL
from provisioners.kube.clusters import KIND_CLUSTER_LABEL
from provisioners.util.containers import docker_client, engine_problem
from provisioners.util.waits import WaitTimeout, wait_for

#: Bound of the wait for one moment of a run (a cold image build included).
MOMENT_TIMEOUT = 1800.0
#: Bound of a run's end after the signal: its whole teardown.
END_TIMEOUT = 900.0


def _containers(run_id: str, *extra: str) -> bool:
    client = docker_client(timeout=30)
    try:
        return bool(client.containers.list(filters={"label": [f"{RUN_ID_LABEL}={run_id}", *extra]}))
    finally:
        client.close()


#: mode: (its flags, "half-way through provisioning": something of the run exists, provision goes on)
MODES: dict[str, tuple[list[str], Callable[[str], bool]]] = {
    "local": ([], lambda run_id: bool(processes(run_id))),
    "docker": (["--ray-image-build", "--ray-no-egress"], _containers),
    "vm": (["--ray-image-build", "--ray-no-egress"], _containers),
    "kind-operator": (["--ray-image-build"], lambda r: _containers(r, KIND_CLUSTER_LABEL)),
}
#: Each mode meets each point once, the signals alternating between modes.
CASES = [
    ("local", "provision", signal.SIGINT),
    ("local", "checks", signal.SIGTERM),
    ("local", "teardown", signal.SIGINT),
    ("docker", "provision", signal.SIGTERM),
    ("docker", "checks", signal.SIGINT),
    ("docker", "teardown", signal.SIGTERM),
    ("vm", "provision", signal.SIGINT),
    ("vm", "checks", signal.SIGTERM),
    ("vm", "teardown", signal.SIGINT),
    ("kind-operator", "provision", signal.SIGTERM),
    ("kind-operator", "checks", signal.SIGINT),
    ("kind-operator", "teardown", signal.SIGTERM),
]


def _cannot_run(mode: str) -> str | None:
    if mode == "local":
        return None
    if problem := engine_problem(None):
        return problem
    if os.geteuid() != 0:
        return "needs root (the iptables rules of --ray-no-egress)"
    return None


def _send(proc: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C: the whole foreground group, children included
    else:
        proc.send_signal(signum)


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("mode", "point", "signum"), CASES, ids=[f"{m}-{p}-{s.name}" for m, p, s in CASES]
)
def test_an_interrupted_run_tears_down_reports_and_leaves_nothing(
    mode: str, point: str, signum: signal.Signals, tmp_path: Path
) -> None:
    if reason := _cannot_run(mode):
        pytest.skip(reason)
    flags, half_way = MODES[mode]
    run_id = f"t-int-{secrets.token_hex(3)}"
    report = tmp_path / "report"
    output = tmp_path / "pytest.out"
    argv = run_argv(
        mode,
        run_id,
        report,
        flags,
        # A few seconds of checks to be interrupted in (the counter from inside takes longest).
        "suites/test_preflight.py",
        "suites/test_spread.py",
        "suites/test_teardown_leak.py",
        "-k",
        "ray_version or spread_from_inside or inventory_sees",
    )
    moments: dict[str, Callable[[], bool]] = {
        "provision": lambda: half_way(run_id),
        "checks": lambda: "ready in " in output.read_text(errors="replace"),
        "teardown": lambda: "tearing down" in output.read_text(errors="replace"),
    }
    proc = start_run(argv, output)
    try:
        try:
            wait_for(
                lambda: moments[point]() or proc.poll() is not None,
                timeout=MOMENT_TIMEOUT,
                what=f"{mode} to reach its {point}",
                interval=0.2,
            )
        except WaitTimeout as exc:
            pytest.fail(f"{exc}; output: {output.read_text()[-3000:]}", pytrace=False)
        assert proc.poll() is None, f"the run ended first: {output.read_text()[-3000:]}"
        _send(proc, signum)
        if point == "teardown":
            time.sleep(1.0)
            _send(proc, signum)  # the second one, during the same teardown
        proc.wait(END_TIMEOUT)
    finally:
        if proc.poll() is None:  # the test failed: do not leave the run behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            sweep("--run-id", run_id)
    try:
        text = output.read_text(errors="replace")
        assert proc.returncode != 0, f"an interrupted run exited 0:\n{text[-3000:]}"
        interrupted = [line for line in text.splitlines() if "interrupted: " in line]
        assert interrupted, f"no 'interrupted' line:\n{text[-3000:]}"
        if point == "teardown":
            assert "still being removed" in text, text[-3000:]
        results = json.loads((report / "results.json").read_text())
        assert [m.get("interrupted") for m in results["modes"]] == [True], results["modes"]

        # Nothing of the run: Docker objects, processes, firewall rules, and the sweep agrees.
        assert labeled(run_id) == set()
        assert processes(run_id) == set()
        assert rules(run_id) == []
        dry = sweep("--dry-run", "--run-id", run_id)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert dry.stdout.strip() == f"nothing left of {run_id}", dry.stdout
    finally:  # a failed check above must not leave the run behind for the next test
        if labeled(run_id) or rules(run_id) or processes(run_id):
            sweep("--run-id", run_id)
