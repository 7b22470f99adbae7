"""The shared ``ray up`` code path, against a stand-in ``ray`` CLI: no cluster, a few seconds."""

from __future__ import annotations

import os
import socket
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from provisioners import launcher
from provisioners.base import ProvisionError
from provisioners.launcher import CommandError, Launcher

# A stand-in `ray`: logs its argv, fails `up` half-way, serves a port for `dashboard -p`.
FAKE_RAY = """#!{python}
import socket, sys, time
with open({calls!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
cmd = sys.argv[1]
if cmd == "up":
    print("Fetching the head node...\\nRunning setup commands on head\\nerror: setup failed")
    sys.exit(1)
if cmd == "dashboard":
    s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[3]))); s.listen(1)
    time.sleep(300)
if cmd == "exec":
    print("ran", sys.argv[-1])
"""


@pytest.fixture
def fake_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "calls.txt"
    script = tmp_path / "ray"
    script.write_text(FAKE_RAY.format(python=sys.executable, calls=str(calls)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(launcher, "ray_cli", lambda: str(script))
    return calls


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    config = launcher.load_template("autoscale.yaml")
    config["cluster_name"] = "rc-test-launcher"
    return launcher.write_config(config, tmp_path / "work")


def test_validate_config_names_the_bad_field() -> None:
    config = launcher.load_template("autoscale.yaml")
    config["max_workers"] = "lots"
    with pytest.raises(ProvisionError, match=r"field 'max_workers': 'lots' is not of type"):
        launcher.validate_config(config)


def test_validate_config_names_an_unknown_key() -> None:
    config = launcher.load_template("autoscale.yaml")
    config["head_node"] = {"InstanceType": "m5.large"}
    config["max_wokers"] = 3
    with pytest.raises(ProvisionError, match="max_wokers"):
        launcher.validate_config(config)


def test_validate_config_names_a_nested_field() -> None:
    config = launcher.load_template("autoscale.yaml")
    config["available_node_types"]["ray.worker.cpu"]["min_workers"] = "two"
    with pytest.raises(
        ProvisionError, match=r"available_node_types\.ray\.worker\.cpu\.min_workers"
    ):
        launcher.validate_config(config)


def test_shipped_templates_pass_rays_schema() -> None:
    launcher.validate_config(launcher.load_template("autoscale.yaml"))
    values = dict.fromkeys(
        [
            "cluster_name", "head_ip", "ssh_user", "ssh_key", "wheel_dir_remote",
            "wheel_dir_local", "setup_requirement", "run_id", "object_store_bytes",
        ],
        "x",
    )  # fmt: skip
    launcher.validate_config(launcher.load_template("vm.yaml", values))


def test_template_value_missing_is_an_error() -> None:
    with pytest.raises(ProvisionError, match="cluster_name"):
        launcher.load_template("vm.yaml", {"head_ip": "10.0.0.1"})


def test_template_values_cannot_change_yaml_structure() -> None:
    values = dict.fromkeys(
        [
            "head_ip", "ssh_user", "ssh_key", "wheel_dir_remote", "wheel_dir_local",
            "setup_requirement", "run_id", "object_store_bytes",
        ],
        "x",
    )  # fmt: skip
    values["cluster_name"] = "evil\nmax_workers: 99"
    config = launcher.load_template("vm.yaml", values)
    assert config["cluster_name"] == "evil\nmax_workers: 99"
    assert config["max_workers"] == 0


def test_run_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(ProvisionError, match=r"sleeper did not finish within 1s"):
        launcher.run(["bash", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], 1, what="sleeper")
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and psutil.Process(child).status() != "zombie":
        assert time.monotonic() < deadline, f"grandchild {child} survived the timeout"
        time.sleep(0.1)


def test_failed_up_reports_output_then_down_still_runs(
    fake_ray: Path, config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray._common.utils

    monkeypatch.setattr(ray._common.utils, "get_default_ray_temp_dir", lambda: str(tmp_path))
    la = Launcher(config_path, run_id="t1", log=tmp_path / "launcher.log")
    with pytest.raises(ProvisionError, match=r"(?s)ray up exited 1.*setup failed"):
        la.up(timeout=30)
    # What `ray up` left on this machine shows up in the inventory...
    state = tmp_path / "cluster-rc-test-launcher.state"
    state.write_text("{}")
    assert [str(i) for i in la.inventory()] == [f"file {state} (ray up state)"]
    # ...and teardown's steps still run after the failure, and clear it.
    la.down(timeout=30)
    la.remove_state_files()
    assert la.inventory() == []
    calls = fake_ray.read_text().splitlines()
    assert calls[0].startswith("up -y")
    assert calls[1].startswith("down -y")
    assert calls[1].endswith(str(config_path))


def test_dashboard_forward_stops_its_process_and_frees_the_port(
    fake_ray: Path, config_path: Path, tmp_path: Path
) -> None:
    la = Launcher(config_path, run_id="t2", log=tmp_path / "launcher.log")
    with la.dashboard(timeout=20) as endpoint:
        assert endpoint.host == "127.0.0.1"
        pids = [int(i.name) for i in la.inventory() if i.kind == "process"]
        assert len(pids) == 1
        socket.create_connection((endpoint.host, endpoint.port), timeout=2).close()
    assert not psutil.pid_exists(pids[0])
    assert la.inventory() == []
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", endpoint.port))  # raises if the forward still holds it


def test_exec_returns_output(fake_ray: Path, config_path: Path, tmp_path: Path) -> None:
    la = Launcher(config_path, run_id="t3", log=tmp_path / "launcher.log")
    assert "ran ray status" in la.exec("ray status", timeout=30)


def test_wait_for_ssh_names_the_host_that_never_answers(tmp_path: Path) -> None:
    key = launcher.generate_key(tmp_path)
    with socket.socket() as silent:  # accepts, never sends an SSH banner
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        target = launcher.SshTarget("127.0.0.1", "root", key, port=silent.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(ProvisionError, match=r"ssh did not answer within 3s on 127\.0\.0\.1"):
            launcher.wait_for_ssh([target], timeout=3)
        assert time.monotonic() - started < 15


def test_command_error_carries_output() -> None:
    with pytest.raises(CommandError, match=r"(?s)boom exited 3.*went wrong"):
        launcher.run(["bash", "-c", "echo went wrong; exit 3"], 10, what="boom")


def test_user_overrides_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump(["not", "a", "mapping"]))
    with pytest.raises(ProvisionError, match="not a YAML mapping"):
        launcher.load_user_overrides(path)
    assert launcher.load_user_overrides(None) == {}
    assert os.fspath(path)
