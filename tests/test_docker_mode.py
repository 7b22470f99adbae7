"""The docker mode on bad input, against the real engine: a clear error and nothing left behind.

Each test uses its own run id, so "nothing left behind" is a query by that id's label. Tests that
need an engine skip (with the reason) where none answers; the no-engine test needs none.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import socket
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from provisioners.contract import base
from provisioners.contract.base import (
    RUN_ID_LABEL,
    ClusterSpec,
    Deadline,
    Provisioner,
    ProvisionError,
    SupportsImageRun,
    SupportsNodeExec,
    SupportsSharedMemory,
    Timeouts,
)
from provisioners.contract.options import Option, OptionError, declared
from provisioners.deployers.raystart import NodeHosts, RayNode, RayStartMode
from provisioners.modes.docker import DockerProvisioner
from provisioners.sources.docker import (
    PUBLISH_DASHBOARD,
    SHM_SIZE,
    WORKER_COMMAND,
    ContainerHosts,
    ContainerNode,
)
from provisioners.util import nodeimage, services
from provisioners.util.containers import DOCKER_HOST, docker_client
from provisioners.util.iptables import NO_EGRESS
from provisioners.util.naming import is_dns_label, run_name
from provisioners.util.nodeimage import ensure_node_image, import_tree
from provisioners.util.runner import run
from provisioners.util.services import Service

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


def make_spec(
    tmp_path: Path, *, node_join: float = 60, options: dict[Option[Any], Any] | None = None
) -> ClusterSpec:
    """A one-worker spec; ``options`` typed as the plugin would hand them over."""
    return ClusterSpec(
        mode="docker",
        run_id=f"t-{uuid.uuid4().hex[:8]}",
        workdir=tmp_path,
        workers=1,
        timeouts=Timeouts(provision=600, node_join=node_join, preflight=10, job=60),
        # The node image is built here (cached), never pulled (the offline guard fails a pull).
        options={
            nodeimage.IMAGE_BUILD.key: True,
            **{opt.key: value for opt, value in (options or {}).items()},
        },
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


def _source(h: ContainerHosts) -> NodeHosts:
    return h  # mypy fails here when the node source drifts from the deployer's Protocol


def _node(n: ContainerNode) -> RayNode:
    return n


def test_docker_provisioner_has_container_abilities() -> None:
    p = DockerProvisioner()
    assert isinstance(p, Provisioner)
    assert isinstance(p, SupportsNodeExec)
    assert isinstance(p, SupportsSharedMemory)
    assert isinstance(p, SupportsImageRun)
    # Exactly the abilities it had before it became the `ray start` deployer on containers.
    abilities = {
        name
        for name, kind in vars(base).items()
        if getattr(kind, "_is_runtime_protocol", False) and isinstance(p, kind)
    }
    assert abilities == {
        "Provisioner",
        "SupportsImageRun",
        "SupportsKillHead",
        "SupportsKillNode",
        "SupportsNodeAddresses",
        "SupportsNodeExec",
        "SupportsSharedMemory",
    }


def _members(protocol: type) -> dict[str, inspect.Signature | None]:
    """A Protocol's members: methods by signature, properties and class variables by name."""
    names = {n for n in vars(protocol) if not n.startswith("_")} | set(protocol.__annotations__)
    return {
        n: inspect.signature(getattr(protocol, n))
        if inspect.isfunction(getattr(protocol, n, None))
        else None
        for n in names
    }


@pytest.mark.parametrize(
    ("part", "protocol"), [(ContainerHosts, NodeHosts), (ContainerNode, RayNode)]
)
def test_docker_is_the_ray_start_deployer_on_containers(part: type, protocol: type) -> None:
    p = DockerProvisioner()
    assert isinstance(p, RayStartMode)
    assert type(p.hosts) is ContainerHosts
    for name, signature in _members(protocol).items():
        assert hasattr(part, name), f"{part.__name__} lacks {protocol.__name__}.{name}"
        if signature is not None:
            have = inspect.signature(getattr(part, name))
            assert list(have.parameters) == list(signature.parameters), (name, have, signature)


def test_docker_mode_class_is_only_delegations() -> None:
    """Its body: options, __init__ handing the deployer its source, one-line delegations."""
    [cls] = ast.parse(textwrap.dedent(inspect.getsource(DockerProvisioner))).body
    assert isinstance(cls, ast.ClassDef)
    methods = [node for node in cls.body if isinstance(node, ast.FunctionDef)]
    others = [
        node
        for node in cls.body
        if not isinstance(node, ast.FunctionDef | ast.AnnAssign | ast.Expr)
    ]
    assert others == [], [ast.unparse(node) for node in others]
    assert [ast.unparse(s) for s in methods[0].body] == ["super().__init__(ContainerHosts())"]
    assert methods[0].name == "__init__"
    for method in methods[1:]:
        params = [a.arg for a in method.args.args[1:]]
        assert [ast.unparse(s) for s in method.body] == [
            f"return self.hosts.{method.name}({', '.join(params)})"
        ], ast.unparse(method)
    delegated = {m.name for m in methods[1:]}
    assert delegated == {
        "node_names",
        "node_exec",
        "node_addresses",
        "probe_from_outside",
        "kill_worker",
        "replaces_lost_nodes",
        "shm_bytes_per_node",
        "shm_advice",
        "image_run",
    }


def test_docker_declares_its_options() -> None:
    flags = [opt.flag for opt in declared(DockerProvisioner)]
    assert flags == [
        "--ray-image",
        "--ray-image-build",
        "--ray-docker-host",
        "--ray-shm-size",
        "--ray-client-port",
        "--ray-dashboard-port",
        "--ray-worker-command",
        "--ray-no-egress",
    ]
    # Shared with vm (and the kind modes) by object, so one flag has one meaning.
    assert declared(DockerProvisioner)[:3] == (nodeimage.IMAGE, nodeimage.IMAGE_BUILD, DOCKER_HOST)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2g", 2 * 1024**3), ("512m", 512 * 1024**2), ("1.5GiB", 3 * 1024**3 // 2), ("4096", 4096)],
)
def test_shm_size_reads_docker_units(text: str, expected: int) -> None:
    assert SHM_SIZE.value(text) == expected


@pytest.mark.parametrize(
    ("option", "text", "message"),
    [
        (SHM_SIZE, "lots", "--ray-shm-size 'lots': expected a size such as 512m"),
        (PUBLISH_DASHBOARD, "70000", "--ray-dashboard-port '70000': expected a TCP port"),
        (PUBLISH_DASHBOARD, "http", "--ray-dashboard-port 'http': expected a TCP port"),
    ],
)
def test_unreadable_option_names_its_flag(option: Option[Any], text: str, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        option.value(text)


def test_image_build_false_means_false() -> None:
    """``ray_image_build=false`` built in vm (``bool("false")``) but not in docker."""
    assert nodeimage.IMAGE_BUILD.value("false") is False
    assert nodeimage.IMAGE_BUILD.value("true") is True


def test_node_names_are_dns_labels() -> None:
    run_id = "CI Run_7/" + "x" * 80
    for name in (
        run_name(run_id, "head"),
        run_name(run_id, "worker", "12"),
        run_name(run_id, "net"),
    ):
        assert is_dns_label(name), name


def test_shm_advice_names_the_flag() -> None:
    advice = DockerProvisioner().shm_advice()
    assert "--shm-size=<size>" in advice
    assert "--ray-shm-size" in advice


def test_no_engine_is_a_missing_prerequisite(
    tmp_path: Path, provisioner: DockerProvisioner
) -> None:
    spec = make_spec(tmp_path, options={DOCKER_HOST: DEAD_SOCKET})
    t0 = time.monotonic()
    missing = provisioner.missing_prerequisites(spec)
    assert time.monotonic() - t0 < 10, "the engine check must be quick"
    assert len(missing) == 1
    assert missing[0].startswith(f"no Docker engine answers at {DEAD_SOCKET} ")
    message = provision_fails(provisioner, spec)
    assert message == missing[0]


@needs_engine
def test_typed_image_options_reach_the_image_service(
    tmp_path: Path, provisioner: DockerProvisioner, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_image(*args: Any, **kwargs: Any) -> str:
        seen.update(kwargs)
        raise ProvisionError("stop here")

    monkeypatch.setattr(nodeimage, "ensure_node_image", fake_image)
    spec = make_spec(tmp_path, options={nodeimage.IMAGE_BUILD: False, nodeimage.IMAGE: "x:1"})
    assert provision_fails(provisioner, spec) == "stop here"
    assert seen["force_build"] is False
    assert seen["image"] == "x:1"


@needs_engine
@pytest.mark.offline_pull_refused
def test_missing_image_fails_clearly(tmp_path: Path, provisioner: DockerProvisioner) -> None:
    spec = make_spec(tmp_path, options={nodeimage.IMAGE: "ray-conformance-missing:does-not-exist"})
    message = provision_fails(provisioner, spec)
    assert message.startswith("node image: 'ray-conformance-missing:does-not-exist'")
    assert "(--ray-image) is not present on the engine and could not be pulled" in message


@needs_engine
def test_taken_port_fails_before_creating_anything(
    tmp_path: Path, provisioner: DockerProvisioner
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        spec = make_spec(tmp_path, options={PUBLISH_DASHBOARD: port})
        message = provision_fails(provisioner, spec)
    assert f"cannot publish 8265 on 127.0.0.1:{port}: the port is already in use" in message


@needs_engine
def test_shm_larger_than_memory_fails(tmp_path: Path, provisioner: DockerProvisioner) -> None:
    spec = make_spec(tmp_path, options={SHM_SIZE: SHM_SIZE.value("100000g")})
    message = provision_fails(provisioner, spec)
    assert "--ray-shm-size asks 100000.0 GiB per node, more than the engine's memory" in message


@needs_engine
def test_worker_that_exits_fails_naming_it(tmp_path: Path, provisioner: DockerProvisioner) -> None:
    spec = make_spec(tmp_path, options={WORKER_COMMAND: "echo broken worker here; exit 3"})
    t0 = time.monotonic()
    message = provision_fails(provisioner, spec)
    assert time.monotonic() - t0 < 300
    worker = run_name(spec.run_id, "worker", "1")
    assert f"node container {worker} exited with code 3 before the cluster was up" in message
    assert "broken worker here" in message  # its last log lines


@needs_engine
def test_worker_that_never_joins_times_out_naming_it(
    tmp_path: Path, provisioner: DockerProvisioner
) -> None:
    spec = make_spec(
        tmp_path, node_join=25, options={WORKER_COMMAND: "echo stuck worker; sleep 600"}
    )
    message = provision_fails(provisioner, spec)
    worker = run_name(spec.run_id, "worker", "1")
    assert "timed out after 25 s waiting for 2 alive Ray node(s) at http://127.0.0.1:" in message
    assert f"never joined: {worker}" in message
    assert f"--- {worker}:\nstuck worker" in message  # the log of the one that never joined


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
def test_import_tree_makes_an_image_of_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "hello").write_text("hi")
    tag = f"rc-test-import-{uuid.uuid4().hex[:8]}:1"
    client = docker_client(timeout=60)
    try:
        import_tree(
            client, root, tag, ["LABEL ray-conformance.test=yes"], Deadline.after(60, "import")
        )
        assert client.images.get(tag).labels == {"ray-conformance.test": "yes"}
        assert not (tmp_path / "tree.tar").exists(), "the archive is left behind"
    finally:
        client.images.remove(tag)


@needs_engine
def test_head_only_cluster_reports_script_and_exec_failures(
    tmp_path: Path, provisioner: DockerProvisioner
) -> None:
    spec = make_spec(tmp_path)
    spec = dataclasses.replace(spec, workers=0)
    handle = provisioner.provision(spec)
    assert handle.expected_nodes == 1
    assert handle.head_address == f"{run_name(spec.run_id, 'head')}:6379"
    assert provisioner.run_in_cluster("print('hello from', 'inside')", 60).strip() == (
        "hello from inside"
    )
    with pytest.raises(RuntimeError, match=r"exited 7; output:\n.*oops"):
        provisioner.run_in_cluster("import sys; print('oops'); sys.exit(7)", 60)
    with pytest.raises(TimeoutError, match="did not finish in 2 s"):
        provisioner.node_exec(provisioner.node_names()[0], ["sleep", "30"], 2)
    assert provisioner.image_run(["python", "-c", "print(6 * 7)"], 60).strip() == "42"
    with pytest.raises(RuntimeError, match=r"exited 5; output:\n.*bad image run"):
        provisioner.image_run(["sh", "-c", "echo bad image run; exit 5"], 60)
    with pytest.raises(TimeoutError, match="did not finish in 1 s"):
        provisioner.image_run(["sleep", "30"], 1)
    with pytest.raises(ValueError, match="port 6379 is not published"):
        provisioner.port_forward(6379)
    provisioner.collect_diagnostics(tmp_path / "diag")
    assert (tmp_path / "diag" / f"{run_name(spec.run_id, 'head')}.log").stat().st_size > 0
    # What --ray-keep-cluster prints removes everything, by id.
    run(["sh", "-c", handle.access["remove"]], 120, what="the printed removal command")
    assert labeled(spec.run_id) == []
    assert provisioner.inventory() == []
    provisioner.teardown()  # still idempotent after a removal by hand


@needs_engine
@pytest.mark.skipif(os.geteuid() != 0, reason="--ray-no-egress needs root")
def test_no_egress_drops_and_counts_what_a_node_sends_off_its_network(
    tmp_path: Path, provisioner: DockerProvisioner
) -> None:
    """A node tries a container outside the run's network (made here, on this machine): the
    egress rule drops it, counts it, and the leak check then reports the attempt."""
    spec = dataclasses.replace(make_spec(tmp_path, options={NO_EGRESS: True}), workers=0)
    provisioner.provision(spec)
    labels = {RUN_ID_LABEL: spec.run_id}
    with services.network(labels) as outside:
        target = Service(
            provisioner.hosts._image,
            ["python3", "-m", "http.server", "8000"],
            name=run_name(spec.run_id, "outside"),
            labels=labels,
            network=outside.name,
            env={"PYTHONUNBUFFERED": "1"},
            wait=LogMessageWaitStrategy("Serving HTTP"),
        )
        try:
            ip = target.start_within(60).address(outside.name)
            probe = f"import socket; s = socket.socket(); s.settimeout(3); print(s.connect_ex(('{ip}', 8000)))"
            head = provisioner.node_names()[0]
            assert provisioner.node_exec(head, ["python", "-c", probe], 30).strip() != "0"
            provisioner.teardown()
            [blocked] = [i for i in provisioner.inventory() if i.kind == "blocked-connection"]
            assert blocked.detail == "containers tried to reach past this machine"
            assert int(blocked.name.split()[0]) > 0
        finally:
            target.stop()
