"""A run killed with SIGKILL mid-provision, then swept: the sweep lists and removes exactly what
it left, leaves a live run beside it alone, and nothing the dead run wrote holds a secret.

Each case is a real ``pytest`` run of one mode (as ``os._exit`` from pytest-timeout would end
it, nothing of the harness runs after the signal) with fake credentials planted in its
environment and files. What it left is looked up here by label, environment and its notes,
independently of the sweep, and compared with the sweep's dry run.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from leftovers import (
    labeled,
    listed,
    plant,
    processes,
    rules,
    run_argv,
    secrets_found,
    settled_labeled,
    start_run,
    sweep,
)

from provisioners.contract.base import RUN_ID_LABEL
from provisioners.kube.clusters import KIND_CLUSTER_LABEL
from provisioners.rehearsals.stage import INSTANCE_LABEL
from provisioners.util import runstate
from provisioners.util.containers import docker_client, engine_problem
from provisioners.util.waits import WaitTimeout, wait_for

#: Bound of one killed run's wait for its mid-provision moment (a cold image build included).
MID_TIMEOUT = 1800.0


def _containers(run_id: str, *extra: str) -> list[object]:
    client = docker_client(timeout=30)
    try:
        flt = {"label": [f"{RUN_ID_LABEL}={run_id}", *extra]}
        return list(client.containers.list(filters=flt))
    finally:
        client.close()


def _docker_node_running(run_id: str) -> bool:
    return bool(_containers(run_id))


def _ray_up_running(run_id: str) -> bool:
    import psutil

    for pid in processes(run_id):
        try:
            cmd = psutil.Process(pid).cmdline()
        except psutil.Error:
            continue
        if "up" in cmd and any(c.endswith("ray") for c in cmd[:2]):
            return True
    return False


def _kind_node_exists(run_id: str) -> bool:
    return bool(_containers(run_id, KIND_CLUSTER_LABEL))


def _instance_backed(run_id: str) -> bool:
    return bool(_containers(run_id, INSTANCE_LABEL))


CASES: dict[str, tuple[list[str], Callable[[str], bool]]] = {
    # mode: (its flags, the moment it is killed: resources exist, provisioning goes on)
    "docker": (["--ray-image-build", "--ray-no-egress"], _docker_node_running),
    "vm": (["--ray-image-build", "--ray-no-egress"], _ray_up_running),
    "kind-operator": (["--ray-image-build"], _kind_node_exists),
    "aws": (["--ray-image-build", "--ray-aws-rehearsal", "--ray-workers", "0"], _instance_backed),
}


def _cannot_run(mode: str) -> str | None:
    if problem := engine_problem(None):
        return problem
    if os.geteuid() != 0:
        return "needs root (iptables rules of --ray-no-egress and the rehearsal)"
    if mode == "kind-operator":
        import shutil

        if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
            return "`go` is not on PATH: the kind toolchain cannot be built"
    return None


@pytest.fixture
def live_run(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """A run in progress beside the killed one: held, with a network and a process of its own."""
    run_id = f"t-live-{secrets.token_hex(3)}"
    runstate.hold(run_id)
    client = docker_client(timeout=30)
    net = client.networks.create(f"rc-{run_id}-net", labels={RUN_ID_LABEL: run_id})
    env = {**os.environ, **runstate.run_env(run_id, "docker")}
    sleeper = subprocess.Popen(["sleep", "3600"], env=env, start_new_session=True)
    try:
        yield run_id, str(net.name), sleeper
    finally:
        sleeper.kill()
        sleeper.wait(10)
        net.remove()
        client.close()
        runstate.release(run_id)


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("mode", list(CASES))
def test_sigkill_mid_provision_then_sweep_removes_exactly_what_it_left(
    mode: str, tmp_path: Path, live_run: tuple[str, str, subprocess.Popen[bytes]]
) -> None:
    if reason := _cannot_run(mode):
        pytest.skip(reason)
    flags, mid = CASES[mode]
    run_id = f"t-kill-{secrets.token_hex(3)}"
    report = tmp_path / "report"
    output = tmp_path / "pytest.out"
    argv = run_argv(
        mode, run_id, report, flags, "suites/test_teardown_leak.py", "-k", "inventory_sees"
    )
    proc = start_run(argv, output, plant(tmp_path))
    try:
        try:
            wait_for(
                lambda: mid(run_id) or proc.poll() is not None,
                timeout=MID_TIMEOUT,
                what=f"{mode} to be half-way through provisioning",
                interval=0.5,
            )
        except WaitTimeout as exc:
            pytest.fail(f"{exc}; output: {output.read_text()[-3000:]}")
        assert proc.poll() is None, (
            f"the run ended before it was killed: {output.read_text()[-3000:]}"
        )
        proc.send_signal(signal.SIGKILL)  # as os._exit: no teardown, no report
    finally:
        proc.kill()
        proc.wait(30)
    try:
        key = runstate.private_path(run_id, mode)
        generated = sorted(p.read_text() for p in key.glob("id_*") if not p.name.endswith(".pub"))

        live, live_net, live_proc = live_run
        docker_left = settled_labeled(run_id)
        rules_left = rules(run_id)
        assert docker_left, f"{mode}: killed half-way, yet nothing of the run is in Docker"
        # The run's orphans (`ray up`, `kind create`, ssh) keep running and may start more.
        before = processes(run_id)
        dry = sweep("--dry-run", "--run-id", run_id, "--run-id", live)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        shown = listed(dry.stdout, run_id)
        # Exactly the Docker objects and firewall rules of the run, its processes and its dir.
        assert {
            s for s in shown if s.split()[0] in ("container", "network", "volume")
        } == docker_left, dry.stdout
        assert {s for s in shown if s.startswith("iptables-rule ")} == {
            f"iptables-rule {r[0]}" for r in rules_left
        }, dry.stdout
        # Each process alive from before the dry run to after it was there to be listed; one
        # born during it (the cold trial of bb146ab saw a new child of the orphaned `ray up`)
        # is the real sweep's to find.
        steady = before & processes(run_id)
        assert {f"process {p}" for p in steady} <= {s for s in shown if s.startswith("process ")}, (
            dry.stdout
        )
        private = runstate.run_dir(run_id) / runstate.PRIVATE_DIR
        if any(p.is_file() for p in private.rglob("*")):  # its secrets (a key, a kubeconfig)
            assert f"run-state {runstate.run_dir(run_id)}" in shown
        assert f"run {live}: in progress" in dry.stdout

        done = sweep("--run-id", run_id, "--run-id", live)
        assert done.returncode == 0, done.stdout + done.stderr
        assert labeled(run_id) == set()
        assert processes(run_id) == set()
        assert rules(run_id) == []
        assert not runstate.run_dir(run_id).exists()
        assert not list(Path("/tmp").glob(f"rc-{run_id}*"))
        # The live run, named too, is untouched.
        assert labeled(live) == {f"network {live_net}"}
        assert processes(live) == {live_proc.pid}
        assert runstate.run_dir(live).exists()

        # Nothing the dead run wrote holds a secret, planted or its own.
        found = secrets_found([report], [output.read_text(errors="replace")])
        found += [
            f"{report}: the run's own private key"
            for g in generated
            for f in report.rglob("*")
            if f.is_file() and g.strip() in f.read_text(errors="replace")
        ]
        assert found == []
    finally:  # a failed assertion above must not leave the killed run behind
        if labeled(run_id) or rules(run_id) or processes(run_id):
            sweep("--run-id", run_id)
