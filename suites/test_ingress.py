"""Ingress: the dashboard and Ray Client reach the head through the mode's ingress, as the book does.

Each path has its own verdict, apart from the port-forward checks: an ingress that routes the
dashboard but not Ray Client's gRPC (or that answers every host alike) fails here while the
port-forward checks pass. The ingress's host never resolves (it is under ``.test``): the
checks send it themselves, as the Host header and as gRPC's ``:authority``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from fixtures.clients import client_versions, ingress_note, version_mismatch
from provisioners.contract.base import (
    ClusterHandle,
    ClusterSpec,
    IngressRoute,
    Provisioner,
    SupportsIngress,
)
from provisioners.util.waits import WaitTimeout, wait_for

#: A Ray Client session whose gRPC channel names the ingress's host (``:authority``): the
#: ``ray://`` address is the controller's, the route is chosen by host as for any HTTP/2 client.
CLIENT_SESSION = """
import sys
from ray.util.client import common

common.GRPC_OPTIONS.append(("grpc.default_authority", sys.argv[2]))
import ray

ray.init(sys.argv[1], logging_level="ERROR")
print("PING", ray.get(ray.remote(num_cpus=0)(lambda: "pong").remote(), timeout=60))
ray.shutdown()
"""


@pytest.fixture(scope="module")
def ray_ingress(ray_provisioner: Provisioner, ray_cluster: ClusterHandle) -> IngressRoute:
    """The mode's ingress route to the head; SKIPS where the mode or the run has none."""
    if not isinstance(ray_provisioner, SupportsIngress):
        pytest.skip(f"{ray_cluster.mode}: no ingress in front of the head (no SupportsIngress)")
    route = ray_provisioner.ingress_route()
    if route is None:
        pytest.skip(f"{ray_cluster.mode}: this run put no ingress in front of the head")
    return route


def _get(url: str, host: str, timeout: float) -> tuple[int, str]:
    """GET ``url`` with ``Host: host``; (status, body), an HTTP error's status included."""
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def test_ingress_dashboard_routed_by_host_and_path(
    ray_ingress: IngressRoute, ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> None:
    """The dashboard answers through the ingress for its host and path prefix."""
    url = f"http://{ray_ingress.address}{ray_ingress.dashboard_prefix}api/version"
    seen: list[str] = ["no answer yet"]

    def answered() -> dict[str, Any] | None:
        try:
            status, body = _get(url, ray_ingress.host, timeout=5)
        except OSError as exc:
            seen[0] = f"{type(exc).__name__}: {exc}"
            return None
        seen[0] = f"HTTP {status}: {body[:200]!r}"
        if status != 200:
            return None
        try:
            data: dict[str, Any] = json.loads(body)
        except ValueError:
            return None
        return data

    try:
        data = wait_for(
            answered,
            timeout=ray_spec.timeouts.preflight,
            what=f"the dashboard's /api/version through {ray_ingress.controller} ({url}, Host {ray_ingress.host})",
            interval=1.0,
            last_seen=lambda: seen[0],
        )
    except WaitTimeout as exc:
        pytest.fail(str(exc), pytrace=False)
    assert data.get("ray_version") == ray_cluster.ray_version, (
        f"through the ingress, {url} (Host {ray_ingress.host}) answered {data}, "
        f"not the cluster's Ray {ray_cluster.ray_version}"
    )


def test_ingress_routes_only_its_host(ray_ingress: IngressRoute) -> None:
    """A request for another host is not routed to the dashboard (the route is by host)."""
    url = f"http://{ray_ingress.address}{ray_ingress.dashboard_prefix}api/version"
    other = f"not-{ray_ingress.host}"
    try:
        status, body = _get(url, other, timeout=10)
    except OSError as exc:
        pytest.fail(f"{ray_ingress.controller} at {url} did not answer: {exc}", pytrace=False)
    assert status == 404, (
        f"{url} with Host {other} answered HTTP {status} ({body[:200]!r}): the ingress routes "
        f"hosts other than {ray_ingress.host} to the head"
    )


def test_ingress_client_session_opens(
    ray_ingress: IngressRoute,
    ray_cluster: ClusterHandle,
    ray_run_script: Any,
    ray_cluster_version: str,
) -> None:
    """A Ray Client session opens through the ingress (gRPC over h2c) and runs a task there."""
    client_ray, client_py = client_versions()
    if problem := version_mismatch(
        client_ray, ray_cluster_version, client_py, ray_cluster.python_version
    ):
        pytest.fail(f"{ray_cluster.mode}: {problem}", pytrace=False)
    url = f"ray://{ray_ingress.address}"
    run = ray_run_script(CLIENT_SESSION, url, ray_ingress.host)
    note = ingress_note(url) if run.returncode != 0 else ""
    assert run.returncode == 0, (
        f"a Ray Client session through {ray_ingress.controller} ({url}, authority "
        f"{ray_ingress.host}) failed: " + (f"{note}\n" if note else "") + run.explain()
    )
    assert "PING pong" in run.stdout, run.explain()
