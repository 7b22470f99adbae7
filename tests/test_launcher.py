"""The shared ``ray up`` code path, against a stand-in ``ray`` CLI: no cluster, a few seconds."""

from __future__ import annotations

import contextlib
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest
import yaml

from provisioners.contract.base import (
    ClusterSpec,
    Endpoint,
    ProvisionError,
    Timeouts,
    direct_endpoint,
)
from provisioners.deployers.launcher import (
    LAUNCHER_CONFIG,
    Launcher,
    Machine,
    MachineSourceBase,
    RayUpMode,
    RayUpRun,
    cli,
    config,
)
from provisioners.deployers.launcher.ssh import SshTarget, generate_key, wait_for_ssh
from provisioners.util import runstate
from provisioners.util.runner import CommandError, CommandTimeout, run
from provisioners.util.waits import wait_for

# A stand-in `ray`: logs its argv, fails `up` half-way, serves a port for `dashboard -p`, and
# caches the resolved config in $TMPDIR/ray-config-<hash> as every real `ray` command but
# `up --no-config-cache` does.
FAKE_RAY = """#!{python}
import json, os, socket, sys, tempfile, time, yaml
with open({calls!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
cmd = sys.argv[1]
if "--no-config-cache" not in sys.argv:
    config = yaml.safe_load(open(sys.argv[-1] if cmd != "exec" else sys.argv[-2]))
    with open(os.path.join(tempfile.gettempdir(), "ray-config-fake"), "w") as f:
        json.dump({{"config": config}}, f)
if cmd == "up" and {up_fails}:
    print("Fetching the head node...\\nRunning setup commands on head\\nerror: setup failed")
    sys.exit(1)
if cmd == "dashboard":
    s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[3]))); s.listen(1)
    time.sleep(300)
if cmd == "exec":
    print("ran", sys.argv[-1])
"""


def _fake_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, up_fails: bool) -> Path:
    calls = tmp_path / "calls.txt"
    script = tmp_path / "ray"
    script.write_text(FAKE_RAY.format(python=sys.executable, calls=str(calls), up_fails=up_fails))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(cli, "ray_cli", lambda: str(script))
    return calls


@pytest.fixture
def fake_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return _fake_ray(tmp_path, monkeypatch, up_fails=True)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    rendered = config.load_template("autoscale.yaml")
    rendered["cluster_name"] = "rc-test-launcher"
    return config.write(rendered, tmp_path / "work")


VM_VALUES = [
    "cluster_name",
    "ssh_user",
    "ssh_key",
    "wheel_dir_remote",
    "wheel_dir_local",
    "setup_requirement",
    "run_id",
    "object_store_bytes",
]


def test_validate_names_the_bad_field() -> None:
    rendered = config.load_template("autoscale.yaml")
    rendered["max_workers"] = "lots"
    with pytest.raises(ProvisionError, match=r"field 'max_workers': 'lots' is not of type"):
        config.validate(rendered)


def test_validate_names_an_unknown_key() -> None:
    rendered = config.load_template("autoscale.yaml")
    rendered["head_node"] = {"InstanceType": "m5.large"}
    rendered["max_wokers"] = 3
    with pytest.raises(ProvisionError, match="max_wokers"):
        config.validate(rendered)


def test_validate_names_a_nested_field() -> None:
    rendered = config.load_template("autoscale.yaml")
    rendered["available_node_types"]["ray.worker.cpu"]["min_workers"] = "two"
    with pytest.raises(
        ProvisionError, match=r"available_node_types\.ray\.worker\.cpu\.min_workers"
    ):
        config.validate(rendered)


def test_shipped_templates_pass_rays_schema() -> None:
    config.validate(config.load_template("autoscale.yaml"))
    config.validate(config.load_template("vm.yaml", dict.fromkeys(VM_VALUES, "x")))


def test_template_value_missing_is_an_error() -> None:
    with pytest.raises(ProvisionError, match="cluster_name"):
        config.load_template("vm.yaml", {"ssh_user": "root"})


def test_template_values_cannot_change_yaml_structure() -> None:
    values = dict.fromkeys(VM_VALUES, "x")
    values["cluster_name"] = "evil\nmax_workers: 99"
    rendered = config.load_template("vm.yaml", values)
    assert rendered["cluster_name"] == "evil\nmax_workers: 99"
    assert rendered["max_workers"] == 0


def test_render_lays_provider_then_user_keys_over_the_template() -> None:
    values = dict.fromkeys(VM_VALUES, "x")
    rendered = config.render(
        "vm.yaml",
        values,
        {"provider": {"head_ip": "10.0.0.1", "worker_ips": ["10.0.0.2"]}, "max_workers": 1},
        {"provider": {"worker_ips": ["10.0.0.9"]}, "idle_timeout_minutes": 7},
    )
    assert rendered["provider"] == {
        "type": "local",
        "head_ip": "10.0.0.1",
        "worker_ips": ["10.0.0.9"],
    }
    assert (rendered["max_workers"], rendered["idle_timeout_minutes"]) == (1, 7)


def test_run_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"sleeper did not finish within 1 s"):
        run(["bash", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], 1, what="sleeper")
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())

    def dead() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(dead, timeout=5, what=f"grandchild {child} to die with its group", interval=0.1)


def test_failed_up_reports_output_then_down_still_runs(
    fake_ray: Path, config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "private" / "tmp"
    la = Launcher(config_path, run_id="t1", log=tmp_path / "launcher.log", tmp_dir=private)
    with pytest.raises(ProvisionError, match=r"ray up exited 1: error: setup failed \(full log"):
        la.up(timeout=30)
    # What `ray up` left on this machine shows up in the inventory...
    state = private / "ray" / "cluster-rc-test-launcher.state"
    state.parent.mkdir()
    state.write_text("{}")
    assert [str(i) for i in la.inventory()] == [f"file {state} (ray up state)"]
    # ...and teardown's steps still run after the failure, and clear it. `ray down` cached the
    # whole config in the run's private temp dir (0700), never in /tmp.
    la.down(timeout=30)
    cache = private / "ray-config-fake"
    assert cache.exists()
    assert private.stat().st_mode & 0o777 == 0o700
    assert f"file {cache} (ray up state)" in [str(i) for i in la.inventory()]
    assert not (Path(tempfile.gettempdir()) / "ray-config-fake").exists()
    la.remove_state_files()
    assert la.inventory() == []
    calls = fake_ray.read_text().splitlines()
    assert calls[0].startswith("up -y")
    assert calls[1].startswith("down -y")
    assert calls[1].endswith(str(config_path))


def test_dashboard_forward_stops_its_process_and_frees_the_port(
    fake_ray: Path, config_path: Path, tmp_path: Path
) -> None:
    la = Launcher(config_path, run_id="t2", log=tmp_path / "launcher.log", tmp_dir=tmp_path / "t")
    with la.dashboard(timeout=20) as endpoint:
        assert endpoint.host == "127.0.0.1"
        pids = [int(i.name) for i in la.inventory() if i.kind == "process"]
        assert len(pids) == 1
        socket.create_connection((endpoint.host, endpoint.port), timeout=2).close()
    assert not psutil.pid_exists(pids[0])
    assert [i for i in la.inventory() if i.kind == "process"] == []
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", endpoint.port))  # raises if the forward still holds it


def test_exec_returns_output(fake_ray: Path, config_path: Path, tmp_path: Path) -> None:
    la = Launcher(config_path, run_id="t3", log=tmp_path / "launcher.log", tmp_dir=tmp_path / "t")
    assert "ran ray status" in la.exec("ray status", timeout=30)


def test_wait_for_ssh_names_the_host_that_never_answers(tmp_path: Path) -> None:
    key = generate_key(tmp_path)
    with socket.socket() as silent:  # accepts, never sends an SSH banner
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        target = SshTarget("127.0.0.1", "root", key, port=silent.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(ProvisionError, match=r"ssh did not answer within 3 s on 127\.0\.0\.1"):
            wait_for_ssh([target], timeout=3)
        assert time.monotonic() - started < 15


def test_command_error_carries_output() -> None:
    with pytest.raises(CommandError, match=r"(?s)boom exited 3.*went wrong"):
        run(["bash", "-c", "echo went wrong; exit 3"], 10, what="boom")


def test_user_overrides_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump(["not", "a", "mapping"]))
    with pytest.raises(ProvisionError, match="not a YAML mapping"):
        config.load_user_overrides(path)
    assert config.load_user_overrides(None) == {}


# --- The driver, with a stand-in mode ----------------------------------------------------------


class FakeMachines(MachineSourceBase):
    """Two machines that exist only as names; the second never joins unless told to."""

    TEMPLATE: ClassVar[str] = "autoscale.yaml"
    MACHINES: ClassVar[list[Machine]] = [Machine("n1", "10.0.0.1"), Machine("n2", "10.0.0.2")]

    def __init__(self, joined: int) -> None:
        super().__init__()
        self.joined = joined
        self.events: list[str] = []

    def prepare_machines(self, run: RayUpRun, timeout: float) -> list[Machine]:
        self.events.append("prepare")
        return list(self.MACHINES)

    def provider_section(self, run: RayUpRun, machines: Sequence[Machine]) -> dict[str, Any]:
        return {"max_workers": len(machines)}

    def alive_nodes(self, run: RayUpRun) -> list[dict[str, Any]]:
        return [{"ip": m.ip, "hostname": m.name, "node_id": "x"} for m in run.machines][
            : self.joined
        ]

    def versions(self, run: RayUpRun) -> tuple[str, str]:
        return "2.0.0", "3.11"

    def head_address(self, run: RayUpRun) -> str:
        return "10.0.0.1:6379"

    def port_forward(
        self, run: RayUpRun, remote_port: int
    ) -> contextlib.AbstractContextManager[Endpoint]:
        return direct_endpoint("10.0.0.1", remote_port)

    def run_in_cluster(self, run: RayUpRun, script: str, timeout: float) -> str:
        raise RuntimeError("the fake machines run no scripts")

    def down(self, run: RayUpRun, timeout: float) -> None:
        self.events.append("down")
        super().down(run, timeout)

    def remove_machines(self, run: RayUpRun) -> None:
        self.events.append("remove")

    def removal_commands(self, run: RayUpRun) -> list[str]:
        return [*super().removal_commands(run), "fake rm n1 n2"]


class FakeMode(RayUpMode[FakeMachines]):
    """The ``ray up`` deployer given the fake machines."""

    def __init__(self, joined: int) -> None:
        super().__init__(FakeMachines(joined))


def _driver_spec(tmp_path: Path, **options: object) -> ClusterSpec:
    return ClusterSpec(
        mode="fake",
        run_id="t9",
        workdir=tmp_path / "work",
        timeouts=Timeouts(provision=60, node_join=2, preflight=2, job=10),
        options=options,
    )


def test_driver_checks_the_schema_before_any_machine_exists(tmp_path: Path) -> None:
    overrides = tmp_path / "bad.yaml"
    overrides.write_text(yaml.safe_dump({"upscaling_speed": "fast"}))
    mode = FakeMode(joined=2)
    with pytest.raises(ProvisionError, match=r"fake cluster config: field 'upscaling_speed'"):
        mode.provision(_driver_spec(tmp_path, **{LAUNCHER_CONFIG.key: overrides}))
    mode.teardown()
    assert mode.source.events == ["remove"]  # nothing prepared; removal is still safe
    assert mode.inventory() == []


def test_driver_names_the_node_that_never_joined_then_tears_down_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_ray(tmp_path, monkeypatch, up_fails=False)
    mode = FakeMode(joined=1)
    with pytest.raises(
        ProvisionError,
        match=r"^timed out after 2 s waiting for at least 2 alive Ray node\(s\); "
        r"last seen: 1 alive: n1/10\.0\.0\.1/x; never joined: n2 \(10\.0\.0\.2\)$",
    ):
        mode.provision(_driver_spec(tmp_path))
    mode.teardown()
    mode.teardown()  # idempotent: `ray down` and the removal's first pass run once
    assert mode.source.events == ["prepare", "down", "remove", "remove"]
    assert [c.split()[0] for c in calls.read_text().splitlines()] == ["up", "down"]


def test_driver_handle_says_how_to_remove_a_kept_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_ray(tmp_path, monkeypatch, up_fails=False)
    mode = FakeMode(joined=2)
    try:
        handle = mode.provision(_driver_spec(tmp_path))
    finally:
        mode.teardown()
    path = tmp_path / "work" / "cluster.yaml"
    assert handle.expected_nodes == 2
    # As a person runs it in a clean shell: the ray CLI by its path, the run's TMPDIR (where the
    # local provider keeps the cluster's state).
    private = runstate.private_path("t9", "fake") / "tmp"
    ray = tmp_path / "ray"
    assert handle.access["remove"] == f"env TMPDIR={private} {ray} down -y {path}; fake rm n1 n2"
    assert yaml.safe_load(path.read_text())["cluster_name"] == "rc-t9-fake"


V1_STATUS = """Node status
---------------------------------------------------------------
Active:
 1 ray.head.default
 2 ray.worker.default
Pending:
 (no pending nodes)
Recent failures:
 (no failures)
"""
V2_STATUS = """Node status
---------------------------------------------------------------
Active:
 (no active nodes)
Idle:
 1 ray.head.default
 2 ray.worker.default
Pending:
 (no pending nodes)
"""


@pytest.mark.parametrize("status", [V1_STATUS, V2_STATUS], ids=["autoscaler-v1", "autoscaler-v2"])
def test_ray_status_counts_active_and_idle_nodes(status: str) -> None:
    from suites.test_launcher import active_nodes

    assert active_nodes(status) == 3
    assert active_nodes("no node status here\n") is None
