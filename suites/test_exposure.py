"""Exposure: the cluster's ports answer where the cluster needs them, and nowhere else.

Ray's GCS (6379), dashboard (8265, an unauthenticated Jobs API that runs anything) and Ray
Client (10001) are reached through the mode's forward on loopback. On the machine running the
suite none of them may answer on any address but loopback; on the nodes, none may answer from
outside the nodes' network, and the dashboard not even on a node's own private address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

import psutil
import pytest

from provisioners.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    GCS_PORT,
    ClusterHandle,
    ClusterSpec,
    Provisioner,
    SupportsNodeAddresses,
)
from provisioners.runstate import RUN_ENV
from provisioners.waits import port_accepts

PORTS = {GCS_PORT: "GCS", DASHBOARD_PORT: "dashboard", CLIENT_PORT: "Ray Client"}
PROBE_TIMEOUT = 2.0


def _non_loopback_addresses() -> list[str]:
    """Every address of this machine but loopback (IPv6 link-local ones need a scope: left out)."""
    found = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            with contextlib.suppress(ValueError):
                ip = ipaddress.ip_address(a.address.split("%", 1)[0])
                if not ip.is_loopback and not ip.is_link_local:
                    found.append(str(ip))
    return sorted(set(found))


def _run_listeners(run_id: str) -> list[str]:
    """Sockets the run's own processes (RC_RUN_ID in their environment) listen on beyond loopback."""
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or conn.pid is None or not conn.laddr:
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(conn.laddr.ip.split("%", 1)[0]).is_loopback:
                continue
        try:
            proc = psutil.Process(conn.pid)
            if proc.environ().get(RUN_ENV) != run_id:
                continue
            name = " ".join(proc.cmdline()[:3])
        except (psutil.Error, OSError):
            continue
        out.append(f"{conn.laddr.ip}:{conn.laddr.port} (pid {conn.pid}: {name})")
    return out


def test_exposure_nothing_of_the_cluster_answers_on_this_machines_addresses(
    ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> None:
    addresses = _non_loopback_addresses()
    answered = [
        f"{PORTS[port]} port {port} on {address}"
        for address in addresses
        for port in PORTS
        if port_accepts(address, port, timeout=PROBE_TIMEOUT)
    ]
    answered += [f"a process of the run listens on {s}" for s in _run_listeners(ray_spec.run_id)]
    assert not answered, (
        f"{ray_cluster.mode}: the cluster answers beyond loopback on this machine "
        f"(addresses: {', '.join(addresses) or 'none'}): " + "; ".join(answered)
    )


def test_exposure_nodes_answer_only_inside_their_network(
    ray_cluster: ClusterHandle, ray_provisioner: Provisioner
) -> None:
    if not isinstance(ray_provisioner, SupportsNodeAddresses):
        pytest.skip(f"{ray_cluster.mode} does not name its nodes' addresses")
    nodes = ray_provisioner.node_addresses()
    assert nodes, f"{ray_cluster.mode}: node_addresses() names no node; the check would be blind"
    where: dict[tuple[str, int], str] = {}
    for node in nodes:
        if node.private:  # the GCS and the client may answer there; the dashboard may not
            where[(node.private, DASHBOARD_PORT)] = f"{node.node}'s private address"
        for address in node.others:
            for port in PORTS:
                where[(address, port)] = node.node
    answered = ray_provisioner.probe_from_outside(sorted(where), PROBE_TIMEOUT)
    assert not answered, (
        f"{ray_cluster.mode}: cluster ports answer from outside the nodes' network: "
        + "; ".join(
            f"{PORTS[port]} port {port} on {address} ({where[(address, port)]})"
            for address, port in sorted(answered)
        )
    )
