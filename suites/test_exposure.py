"""Exposure: the cluster's ports answer where the cluster needs them, and nowhere else.

Ray's GCS (6379), dashboard (8265, an unauthenticated Jobs API that runs anything) and Ray
Client (10001) are reached through the mode's forward on loopback. On the machine running the
suite none of them may answer on any address but loopback; on the nodes, none may answer from
outside the nodes' network, and the dashboard not even on a node's own private address.

Not checked, because no Ray 2.60 setting changes it: the GCS, raylet and agents listen on every
interface of their node whatever ``--node-ip-address`` says (so a ``local`` cluster's GCS port,
a kernel-picked one, answers on this machine's LAN address too).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

import psutil
import pytest

from provisioners.contract.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    GCS_PORT,
    ClusterHandle,
    ClusterSpec,
    Provisioner,
    SupportsNodeAddresses,
)
from provisioners.util.waits import port_accepts

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
