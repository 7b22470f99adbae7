"""Node loss: a worker taken away without warning is reported DEAD, and an operator replaces it.

Runs after every other check of its mode (it breaks the cluster on purpose) and before the
teardown check. Ray's GCS marks a node DEAD only after its health checks fail several times in
a row, so the bound is the node timeout, not a few seconds.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fixtures.nodes import Node, census
from provisioners.contract.base import ClusterHandle, ClusterSpec, Provisioner, SupportsKillNode
from provisioners.util.waits import wait_for

pytestmark = pytest.mark.ray_disruptive


def _killer(provisioner: Provisioner) -> SupportsKillNode:
    if not isinstance(provisioner, SupportsKillNode):
        pytest.skip("this mode cannot take a worker node away (no SupportsKillNode)")
    return provisioner


@pytest.fixture(scope="module")
def lost_worker(
    ray_cluster: ClusterHandle,
    ray_provisioner: Provisioner,
    ray_dashboard_url: str,
    ray_alive_nodes: list[dict[str, Any]],
) -> dict[str, Any]:
    """Kill one worker once for this module; what was alive before, and the lost node's IP."""
    killer = _killer(ray_provisioner)
    if ray_cluster.expected_nodes < 2:
        pytest.skip(f"{ray_cluster.mode}: no worker node to take away")
    before = [n for n in census(ray_dashboard_url) if n.state == "ALIVE"]
    ip = killer.kill_worker()
    lost = [n for n in before if n.ip == ip]
    assert lost, f"the mode killed the worker at {ip}, which Ray did not list as alive: {before}"
    return {"ip": ip, "node": lost[0], "before": before, "killed_at": time.monotonic()}


def _seen(nodes: list[Node]) -> str:
    return "; ".join(n.describe() for n in nodes) or "no nodes"


def test_node_loss_killed_worker_is_reported_dead(
    lost_worker: dict[str, Any], ray_dashboard_url: str, ray_spec: ClusterSpec
) -> None:
    """A worker killed without warning is reported DEAD."""
    node: Node = lost_worker["node"]
    last: list[list[Node]] = [[]]

    def dead() -> bool:
        last[0] = census(ray_dashboard_url)
        return any(n.node_id == node.node_id and n.state == "DEAD" for n in last[0])

    wait_for(
        dead,
        timeout=ray_spec.timeouts.node_join,
        what=f"Ray to report the killed worker {node.node_id[:12]} at {node.ip} as DEAD",
        interval=1.0,
        last_seen=lambda: _seen(last[0]),
    )


def test_node_loss_lost_worker_is_replaced(
    lost_worker: dict[str, Any],
    ray_provisioner: Provisioner,
    ray_cluster: ClusterHandle,
    ray_dashboard_url: str,
    ray_spec: ClusterSpec,
) -> None:
    """The operator replaces the lost worker with a new alive node."""
    if not _killer(ray_provisioner).replaces_lost_nodes():
        pytest.skip(f"{ray_cluster.mode}: nothing replaces a lost node here (no operator)")
    before = {n.node_id for n in lost_worker["before"]}
    last: list[list[Node]] = [[]]

    def replaced() -> bool:
        last[0] = [n for n in census(ray_dashboard_url) if n.state == "ALIVE"]
        fresh = [n for n in last[0] if n.node_id not in before]
        return len(last[0]) == ray_cluster.expected_nodes and bool(fresh)

    wait_for(
        replaced,
        timeout=ray_spec.timeouts.node_join,
        what=f"{ray_cluster.expected_nodes} alive nodes again, one of them new",
        interval=1.0,
        last_seen=lambda: _seen(last[0]),
    )
