"""Port-forward: the client (10001) and dashboard (8265) ports reachable on loopback, and freed."""

from __future__ import annotations

import ipaddress
from typing import Any

import psutil
import pytest

from provisioners.contract.base import CLIENT_PORT, DASHBOARD_PORT, ClusterHandle, Provisioner
from provisioners.util.waits import http_json, port_accepts, port_is_free

# Every check here is in the certification profile (reports/certify.py PROFILE).
pytestmark = pytest.mark.ray_certification

CLIENT_SESSION = """
import sys, ray
ray.init(sys.argv[1], logging_level="ERROR")
print("CPUS", ray.cluster_resources().get("CPU", 0))
print("PING", ray.get(ray.remote(num_cpus=0)(lambda: "pong").remote(), timeout=60))
ray.shutdown()
"""


def listening_addresses(port: int) -> list[str]:
    """Every local address a TCP socket of this machine listens on at ``port``, from the kernel."""
    return sorted(
        {
            c.laddr.ip
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        }
    )


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


@pytest.mark.parametrize("remote_port", [CLIENT_PORT, DASHBOARD_PORT], ids=["client", "dashboard"])
def test_port_forward_reachable_on_loopback_then_freed(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle, remote_port: int
) -> None:
    """Each forwarded port is on loopback and answers there, and is freed once the forward closes."""
    with ray_provisioner.port_forward(remote_port) as endpoint:
        assert endpoint.host in ("127.0.0.1", "localhost", "::1"), (
            f"forward of {remote_port} is not on loopback: {endpoint.address}"
        )
        assert port_accepts(endpoint.host, endpoint.port, timeout=5), (
            f"nothing accepts connections at {endpoint.address} (forward of {remote_port})"
        )
        # What the kernel says listens there, not what the forward says of itself: a forward
        # bound to every address answers other machines too.
        listening = listening_addresses(endpoint.port)
        assert listening, (
            f"{endpoint.address} accepts connections (forward of {remote_port}) but no socket of "
            "this machine listens on that port: where it is exposed cannot be checked"
        )
        exposed = [a for a in listening if not _loopback(a)]
        assert not exposed, (
            f"forward of {remote_port} at {endpoint.address} also listens on "
            f"{', '.join(exposed)}: reachable beyond this machine's loopback"
        )
        if remote_port == DASHBOARD_PORT:
            version = http_json(f"http://{endpoint.address}/api/version")
            assert "ray_version" in version, f"{endpoint.address}/api/version answered {version}"
    assert port_is_free(endpoint.port), (
        f"local port {endpoint.port} (forward of {remote_port}) is still held after the forward was closed"
    )


def test_port_forward_client_session_opens(ray_client_address: str, ray_run_script: Any) -> None:
    """A Ray Client session opens through the forwarded client port and runs a task there."""
    run = ray_run_script(CLIENT_SESSION, ray_client_address)
    assert run.returncode == 0, (
        f"a Ray Client session through {ray_client_address} failed: " + run.explain()
    )
    assert "PING pong" in run.stdout, run.explain()
