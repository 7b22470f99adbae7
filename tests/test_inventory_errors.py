"""Every mode's inventory, fed an API or engine that errors: a failure naming what could not be
listed and why, never an empty list that the leak check would read as "nothing left".

The APIs are real clients against loopback servers that answer errors (an EC2 endpoint answering
503, the IBM VPC stand-in refusing the token) or against a loopback port nothing listens on (a
Docker engine that does not answer). ``tests/test_harness_leak.py`` shows the leak check failing
on such an item.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest
import yaml
from botocore.config import Config

from provisioners.contract.base import (
    INVENTORY_ERROR,
    ClusterSpec,
    InventoryError,
    InventoryItem,
    Timeouts,
)
from provisioners.modes.aws import AwsProvisioner
from provisioners.modes.docker import DockerProvisioner
from provisioners.modes.ibm import IbmProvisioner
from provisioners.modes.vm import VmProvisioner
from provisioners.rehearsals.aws import Stage
from provisioners.rehearsals.ibm_standin import serve
from provisioners.sources.aws import REHEARSAL, aws_inventory
from provisioners.sources.ibm import Snapshot, ibm_inventory
from provisioners.util import containers
from provisioners.util.ibm_vpc import collect, vpc_client
from provisioners.util.relay import free_port

EC2_DOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>Unavailable</Code>"
    b"<Message>The service is unavailable. Please try again shortly.</Message></Error></Errors>"
    b"<RequestID>rc-test</RequestID></Response>"
)


@contextlib.contextmanager
def answering(status: int, body: bytes) -> Iterator[str]:
    """A loopback HTTP server answering every request with ``status`` and ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _spec(tmp_path: Path, mode: str, **options: object) -> ClusterSpec:
    return ClusterSpec(
        mode=mode,
        run_id=f"t{int(time.time() * 1000) % 10**8}",
        workdir=tmp_path / "work",
        timeouts=Timeouts(provision=60, node_join=30, preflight=3, job=30),
        options=options,
    )


def _dead_engine() -> str:
    return f"tcp://127.0.0.1:{free_port()}"  # nothing listens there


def _errors(items: list[InventoryItem]) -> list[str]:
    return [str(i) for i in items if i.kind == INVENTORY_ERROR]


# --- aws -------------------------------------------------------------------------------------


@pytest.fixture
def ec2_down() -> Iterator[Any]:
    with answering(503, EC2_DOWN) as url:
        yield boto3.client(
            "ec2",
            endpoint_url=url,
            region_name="us-west-2",
            aws_access_key_id="rc-test",
            aws_secret_access_key="rc-test",
            config=Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=5),
        )


def test_aws_inventory_that_cannot_list_raises_naming_the_kind(ec2_down: Any) -> None:
    with pytest.raises(
        InventoryError, match=r"could not list EC2 instances: ClientError: .*Unavailable"
    ):
        aws_inventory(ec2_down, "rc-r1-aws", "r1", "k")


def test_aws_leak_query_reports_the_failed_listing_before_and_after_cleanup(
    ec2_down: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path, "aws", **{REHEARSAL.key: False})
    mode = AwsProvisioner()
    mode._spec = spec
    machines = mode.source
    machines.plan(mode.run)
    monkeypatch.setattr(machines, "ec2", lambda: ec2_down)
    [before] = machines.leak_query(mode.run)
    assert before.kind == INVENTORY_ERROR
    assert before.name == "EC2 instances"
    machines._cleaned = False
    machines.remove_machines(mode.run)  # cleanup fails too; the snapshot it leaves is the failure
    assert _errors(machines.leak_query(mode.run)) == [str(before)]
    assert "Unavailable" in before.detail


# --- ibm -------------------------------------------------------------------------------------


def test_ibm_inventory_that_cannot_list_raises_naming_the_kind() -> None:
    with serve("rc-key") as standin:
        vpc = vpc_client(standin.base, "rc-key", standin.base)
        assert collect(vpc.list_instances, "instances") == []  # a token, and the API answers
        standin.cloud.tokens.clear()  # now it refuses the token: 401 on every listing
        with pytest.raises(InventoryError, match=r"could not list VPC instances: .*401"):
            ibm_inventory(vpc, "rc-r1-ibm", "r1", "k", Snapshot(set(), {}))


def test_ibm_leak_query_reports_the_failed_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mode = IbmProvisioner()
    mode._spec = _spec(tmp_path, "ibm")
    machines = mode.source
    machines._spec = mode.spec  # as plan() keeps it
    machines._cluster, machines._before = "rc-r1-ibm", Snapshot(set(), {})
    with serve("rc-key") as standin:
        vpc = vpc_client(standin.base, "wrong-key", standin.base)  # IAM refuses the key
        monkeypatch.setattr(machines, "vpc", lambda: vpc)
        errors = _errors(machines.leak_query(mode.run))
    assert len(errors) == 1, errors
    assert errors[0].startswith("could not list VPC instances: ")
    assert "Provided API key could not be found" in errors[0]


# --- the rehearsal stage (aws and ibm), docker, vm: a Docker engine that does not answer ----


def test_rehearsal_stage_inventory_without_an_engine_is_a_failure(tmp_path: Path) -> None:
    stage = Stage("r1", "aws", tmp_path, "us-west-2", _dead_engine(), lambda _msg: None)
    errors = _errors(stage.inventory())
    assert len(errors) == 1, errors
    assert errors[0].startswith("could not list Docker objects of run r1 (aws): ")


def test_container_listing_without_an_engine_raises_naming_the_kind() -> None:
    client = docker.DockerClient(base_url=_dead_engine(), version="1.41", timeout=3)
    with pytest.raises(InventoryError, match=r"could not list Docker containers of run r1 \(vm\)"):
        containers.inventory(client, "r1", "vm")


def test_docker_inventory_without_an_engine_is_a_failure_and_keeps_what_it_made(
    tmp_path: Path,
) -> None:
    mode = DockerProvisioner()
    spec = _spec(tmp_path, "docker", **{containers.DOCKER_HOST.key: _dead_engine()})
    mode._spec = mode.hosts._spec = spec
    mode.hosts._names, mode.hosts._network = ["rc-r1-docker-head"], "rc-r1-docker-net"
    items = mode.inventory()
    assert items[0].kind == INVENTORY_ERROR, items
    assert str(items[0]).startswith("could not list Docker ")
    assert [str(i) for i in items[1:]] == [
        "container rc-r1-docker-head (engine unreachable)",
        "network rc-r1-docker-net (engine unreachable)",
    ]


def test_vm_inventory_without_an_engine_is_a_failure(tmp_path: Path) -> None:
    mode = VmProvisioner()
    mode._spec = _spec(tmp_path, "vm", **{containers.DOCKER_HOST.key: _dead_engine()})
    mode.source.plan(mode.run)
    errors = _errors(mode.source.leak_query(mode.run))
    assert len(errors) == 1, errors
    assert errors[0].startswith("could not list Docker objects of run ")


# --- kind-operator, kube-operator, openshift: a Kubernetes API that does not answer ----------


def test_kuberay_inventory_without_an_api_raises_naming_the_kind(tmp_path: Path) -> None:
    from provisioners.deployers.kuberay import KubeRayDeployer, RaySize
    from provisioners.kube.api import Kube

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dead",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "c", "user": "u"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    kube = Kube(path, cache_file=tmp_path / "cache.json", context="dead")
    deployer = KubeRayDeployer(
        kube,
        run_id="r1",
        namespace="rc-r1",
        name="rc-r1",
        image="ray",
        size=RaySize(workers=1),
        operator=None,
        workdir=tmp_path,
        progress=lambda _msg: None,
    )
    t0 = time.monotonic()
    with pytest.raises(InventoryError, match=r"could not list Pod objects of the run: "):
        deployer.inventory()
    assert time.monotonic() - t0 < 60
