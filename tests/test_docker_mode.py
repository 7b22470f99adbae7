"""The docker mode on bad input, against the real engine: a clear error and nothing left behind.

Each test uses its own run id, so "nothing left behind" is a query by that id's label. Tests that
need an engine skip (with the reason) where none answers; the no-engine test needs none.
"""

from __future__ import annotations

import dataclasses
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioners.base import (
    RUN_ID_LABEL,
    ClusterSpec,
    Provisioner,
    ProvisionError,
    SupportsImageRun,
    SupportsNodeExec,
    SupportsSharedMemory,
    Timeouts,
)
from provisioners.docker import DockerProvisioner
from provisioners.docker.image import docker_client, ensure_node_image
from provisioners.docker.provisioner import _prefix, parse_size

DEAD_SOCKET = "unix:///tmp/ray-conformance-no-engine.sock"


def _conforms(p: DockerProvisioner) -> Provisioner:
    return p  # mypy fails here when a contract method drifts


def _engine_problem() -> str:
    try:
        client = docker_client(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"no Docker engine answers: {exc}"
    return ""


needs_engine = pytest.mark.skipif(bool(_engine_problem()), reason=_engine_problem() or "engine")


def make_spec(tmp_path: Path, *, node_join: float = 60, **options: Any) -> ClusterSpec:
    return ClusterSpec(
        mode="docker",
        run_id=f"t-{uuid.uuid4().hex[:8]}",
        workdir=tmp_path,
        workers=1,
        timeouts=Timeouts(provision=600, node_join=node_join, preflight=10, job=60),
        options=options,
    )


def labeled(run_id: str) -> list[str]:
    """Everything on the engine carrying this run's label, as "kind name"."""
    client = docker_client(timeout=30)
    try:
        label = {"label": f"{RUN_ID_LABEL}={run_id}"}
        return (
            [f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
            + [f"network {n.name}" for n in client.networks.list(filters=label)]
            + [f"volume {v.name}" for v in client.volumes.list(filters=label)]
        )
    finally:
        client.close()


@pytest.fixture
def provisioner() -> Iterator[DockerProvisioner]:
    p = DockerProvisioner()
    yield p
    p.teardown()  # a test that failed midway still leaves nothing


def provision_fails(p: DockerProvisioner, spec: ClusterSpec) -> str:
    """Provision, expect ProvisionError, tear down; return the message (after leak checks)."""
    with pytest.raises(ProvisionError) as info:
        p.provision(spec)
    p.teardown()
    p.teardown()  # idempotent
    assert p.inventory() == [], f"inventory after teardown: {p.inventory()}"
    if not _engine_problem():
        assert labeled(spec.run_id) == [], f"left behind: {labeled(spec.run_id)}"
    return str(info.value)


def test_docker_provisioner_has_container_abilities() -> None:
    p = DockerProvisioner()
    assert isinstance(p, Provisioner)
    assert isinstance(p, SupportsNodeExec)
    assert isinstance(p, SupportsSharedMemory)
    assert isinstance(p, SupportsImageRun)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2g", 2 * 1024**3), ("512m", 512 * 1024**2), ("1.5GiB", 3 * 1024**3 // 2), ("4096", 4096)],
)
def test_parse_size_reads_docker_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_prefix_makes_valid_container_names() -> None:
    assert _prefix("CI Run_7/x") == "rc-ci-run-7-x-"


def test_no_engine_is_a_missing_prerequisite(
    tmp_path: Path, provisioner: DockerProvisioner
) -> None:
    spec = make_spec(tmp_path, docker_host=DEAD_SOCKET)
    t0 = time.monotonic()
    missing = provisioner.missing_prerequisites(spec)
    assert time.monotonic() - t0 < 10, "the engine check must be quick"
    assert missing == [
        f"docker: no engine answers at {DEAD_SOCKET} (start dockerd or Docker Desktop)"
    ]
    message = provision_fails(provisioner, spec)
    assert message == missing[0]


@needs_engine
def test_missing_image_fails_clearly(tmp_path: Path, provisioner: DockerProvisioner) -> None:
    spec = make_spec(tmp_path, ray_image="ray-conformance-missing:does-not-exist")
    message = provision_fails(provisioner, spec)
    assert "image 'ray-conformance-missing:does-not-exist' is not present" in message
    assert "could not be pulled" in message


@needs_engine
def test_taken_port_fails_before_creating_anything(
    tmp_path: Path, provisioner: DockerProvisioner
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        spec = make_spec(tmp_path, dashboard_port=str(port))
        message = provision_fails(provisioner, spec)
    assert f"cannot publish 8265 on 127.0.0.1:{port}: the port is already in use" in message


@needs_engine
def test_shm_larger_than_memory_fails(tmp_path: Path, provisioner: DockerProvisioner) -> None:
    spec = make_spec(tmp_path, ray_shm_size="100000g")
    message = provision_fails(provisioner, spec)
    assert "--ray-shm-size 100000g" in message
    assert "is larger than the engine's memory" in message


@needs_engine
def test_unreadable_shm_size_fails(tmp_path: Path, provisioner: DockerProvisioner) -> None:
    message = provision_fails(provisioner, make_spec(tmp_path, ray_shm_size="lots"))
    assert "cannot read the shm size 'lots'" in message


@needs_engine
def test_worker_that_exits_fails_naming_it(tmp_path: Path, provisioner: DockerProvisioner) -> None:
    spec = make_spec(tmp_path, worker_command="echo broken worker here; exit 3")
    t0 = time.monotonic()
    message = provision_fails(provisioner, spec)
    assert time.monotonic() - t0 < 300
    worker = f"{_prefix(spec.run_id)}worker-1"
    assert f"node container {worker} exited with code 3 before joining" in message
    assert "broken worker here" in message  # its last log lines


@needs_engine
def test_worker_that_never_joins_times_out_naming_it(
    tmp_path: Path, provisioner: DockerProvisioner
) -> None:
    spec = make_spec(tmp_path, node_join=25, worker_command="echo stuck worker; sleep 600")
    message = provision_fails(provisioner, spec)
    worker = f"{_prefix(spec.run_id)}worker-1"
    assert f"timed out after 25 s waiting for {worker} to be alive Ray nodes" in message
    assert "stuck worker" in message


@needs_engine
def test_node_image_is_reused_from_cache() -> None:
    lines: list[str] = []
    first = ensure_node_image(lines.append, 900, need_ssh=True)
    t0 = time.monotonic()
    second = ensure_node_image(lines.append, 60, need_ssh=True)
    assert second == first
    assert time.monotonic() - t0 < 10, f"cached image lookup was slow: {lines}"
    assert any("cached" in line for line in lines), lines


@needs_engine
def test_head_only_cluster_reports_script_and_exec_failures(
    tmp_path: Path, provisioner: DockerProvisioner
) -> None:
    spec = make_spec(tmp_path)
    spec = dataclasses.replace(spec, workers=0)
    handle = provisioner.provision(spec)
    assert handle.expected_nodes == 1
    assert handle.head_address == f"{_prefix(spec.run_id)}head:6379"
    assert provisioner.run_in_cluster("print('hello from', 'inside')", 60).strip() == (
        "hello from inside"
    )
    with pytest.raises(RuntimeError, match=r"exited 7; output:\n.*oops"):
        provisioner.run_in_cluster("import sys; print('oops'); sys.exit(7)", 60)
    with pytest.raises(TimeoutError, match="did not finish in 2 s"):
        provisioner.node_exec(provisioner.node_names()[0], ["sleep", "30"], 2)
    with pytest.raises(ValueError, match="port 6379 is not published"):
        provisioner.port_forward(6379)
    provisioner.collect_diagnostics(tmp_path / "diag")
    assert (tmp_path / "diag" / f"{_prefix(spec.run_id)}head.log").stat().st_size > 0
    provisioner.teardown()
    assert provisioner.inventory() == []
    assert labeled(spec.run_id) == []
