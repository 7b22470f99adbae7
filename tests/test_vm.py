"""Mode ``vm`` on bad input: a clear one-line error, and nothing left behind."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from provisioners.contract.base import ClusterSpec, ProvisionError, Timeouts
from provisioners.deployers.launcher import LAUNCHER_CONFIG, generate_key
from provisioners.modes.vm import VmProvisioner
from provisioners.sources.vm import HOSTS, SSH_KEY, SSH_USER
from provisioners.util import runstate
from provisioners.util.containers import docker_client


def _spec(tmp_path: Path, **options: object) -> ClusterSpec:
    return ClusterSpec(
        mode="vm",
        run_id=f"t{int(time.time() * 1000) % 10**8}",
        workdir=tmp_path / "work",
        workers=0,
        timeouts=Timeouts(provision=120, node_join=60, preflight=3, job=60),
        options=options,
    )


@pytest.fixture
def silent_host() -> Iterator[str]:
    """A loopback address whose port 22 accepts and then never speaks (a hung sshd)."""
    host = "127.0.0.77"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # earlier probes' TIME_WAIT
        try:
            s.bind((host, 22))
        except OSError as e:
            pytest.skip(f"cannot listen on {host}:22 here ({e})")
        s.listen(4)
        yield host


def test_schema_error_fails_before_any_node_exists(tmp_path: Path) -> None:
    overrides = tmp_path / "bad.yaml"
    overrides.write_text(yaml.safe_dump({"idle_timeout_minutes": "soon"}))
    spec = _spec(tmp_path, **{LAUNCHER_CONFIG.key: overrides})
    p = VmProvisioner()
    with pytest.raises(ProvisionError, match=r"field 'idle_timeout_minutes'") as info:
        p.provision(spec)
    assert "\n" not in str(info.value)
    p.teardown()
    assert p.inventory() == []
    assert not (spec.workdir / "cluster.yaml").exists()  # `ray up` never got a config


def test_a_run_a_sweep_holds_fails_and_tears_down_without_touching_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's lock refused before the source was handed the run: teardown and the leak check
    still work, and ask nothing of a source that made nothing."""

    def busy(run_id: str) -> None:
        raise runstate.RunBusy(f"run {run_id}: a sweep is removing it")

    monkeypatch.setattr(runstate, "hold", busy)  # the driver calls runstate.hold
    p = VmProvisioner()
    with pytest.raises(runstate.RunBusy, match="a sweep is removing it"):
        p.provision(_spec(tmp_path))
    p.teardown()
    assert p.inventory() == []


def test_missing_key_for_real_hosts_is_a_clear_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path, **{HOSTS.key: ["10.0.0.5"], SSH_KEY.key: tmp_path / "nope"})
    p = VmProvisioner()
    with pytest.raises(ProvisionError, match="--ray-ssh-key must name a private key file"):
        p.provision(spec)
    p.teardown()
    assert p.inventory() == []


def test_host_that_does_not_answer_fails_within_timeout_naming_it(
    tmp_path: Path, silent_host: str
) -> None:
    key = generate_key(tmp_path / "keys")
    spec = _spec(tmp_path, **{HOSTS.key: [silent_host], SSH_USER.key: "root", SSH_KEY.key: key})
    p = VmProvisioner()
    started = time.monotonic()
    with pytest.raises(ProvisionError, match=rf"ssh did not answer within 3 s on {silent_host}"):
        p.provision(spec)
    assert time.monotonic() - started < spec.timeouts.preflight + 12
    p.teardown()
    assert p.inventory() == []


def _cannot_run(spec: ClusterSpec) -> str | None:
    """Why the container-backed test cannot run here, or None when it can."""
    missing = VmProvisioner().missing_prerequisites(spec)
    if missing:
        return "; ".join(missing)
    client = docker_client(timeout=5)
    try:
        if not any(
            t.startswith("ray-conformance-node:") for i in client.images.list() for t in i.tags
        ):
            return "the node image is not built yet (run the docker mode once)"
    finally:
        client.close()
    return None


def test_ray_up_failing_half_way_is_torn_down_completely(tmp_path: Path) -> None:
    """Containers exist and `ray up` has started when it fails: teardown must still clean up."""
    overrides = tmp_path / "fail.yaml"
    overrides.write_text(yaml.safe_dump({"setup_commands": ["echo rc-half-way; false"]}))
    spec = _spec(tmp_path, **{LAUNCHER_CONFIG.key: overrides})
    reason = _cannot_run(spec)
    if reason:
        pytest.skip(reason)
    p = VmProvisioner()
    try:
        with pytest.raises(ProvisionError, match=r"ray up exited 1: .*full log") as info:
            p.provision(spec)
        assert "\n" not in str(info.value)
        kinds = {i.kind for i in p.inventory()}
        assert {"container", "network"} <= kinds, f"inventory missed the live nodes: {kinds}"
    finally:
        p.teardown()
    assert p.inventory() == []
    p.teardown()  # idempotent
    log = (spec.workdir / "launcher.log").read_text()
    assert "rc-half-way" in log, "the launcher log lacks the failing setup command's output"
    assert " down -y " in log, "teardown did not run `ray down` after the failed `ray up`"
