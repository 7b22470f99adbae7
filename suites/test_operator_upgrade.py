"""Operator upgrade: the cluster made under an older operator survives its upgrade in place.

KubeRay's own CI runs an upgrade job; users meet it as ``helm upgrade`` under a running
cluster. Where the run was asked for one (``--ray-operator-upgrade-from``), the RayCluster was
created under the older operator; this module upgrades the operator in place once, then checks
that no Ray node restarted, that the new operator reconciles the cluster (it makes again an
object of the cluster that was taken away), and that the spread counter passes. It runs after
the other checks of the mode and before the other disruptive ones.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fixtures.nodes import Node, census
from provisioners.contract.base import (
    DASHBOARD_PORT,
    ClusterHandle,
    ClusterSpec,
    OperatorUpgrade,
    Provisioner,
    SupportsOperatorUpgrade,
)
from suites.test_spread import check_spread, headroom, parse_result, spread_source

pytestmark = pytest.mark.ray_disruptive(order=0)


def _alive(provisioner: Provisioner) -> list[Node]:
    # A new forward each time: a forward does not outlive what it was made to.
    with provisioner.port_forward(DASHBOARD_PORT) as endpoint:
        return [n for n in census(f"http://{endpoint.address}") if n.state == "ALIVE"]


@pytest.fixture(scope="module")
def upgrade(
    ray_provisioner: Provisioner,
    ray_cluster: ClusterHandle,
    ray_spec: ClusterSpec,
    ray_alive_nodes: list[dict[str, Any]],
) -> dict[str, Any]:
    """Upgrade the operator once for this module; the Ray nodes before and after, and what runs."""
    if not isinstance(ray_provisioner, SupportsOperatorUpgrade):
        pytest.skip(f"{ray_cluster.mode}: no operator to upgrade (no SupportsOperatorUpgrade)")
    asked: OperatorUpgrade | None = ray_provisioner.operator_upgrade()
    if asked is None:
        pytest.skip(f"{ray_cluster.mode}: this run was asked for no operator upgrade")
    before = _alive(ray_provisioner)
    t0 = time.monotonic()
    try:
        runs = ray_provisioner.upgrade_operator(ray_spec.timeouts.node_join)
    except RuntimeError as exc:
        pytest.fail(
            f"{asked.operator} {asked.from_version} -> {asked.to_version}: {exc}", pytrace=False
        )
    seconds = time.monotonic() - t0
    return {
        "asked": asked,
        "before": before,
        "after": _alive(ray_provisioner),
        "runs": runs,
        "seconds": seconds,
    }


def test_operator_upgrade_keeps_every_ray_node(
    upgrade: dict[str, Any], ray_cluster: ClusterHandle, request: pytest.FixtureRequest
) -> None:
    """The operator's upgrade in place restarts no Ray node of the running cluster."""
    asked: OperatorUpgrade = upgrade["asked"]
    request.node.user_properties.append(("operator_upgrade_s", round(upgrade["seconds"], 1)))
    request.node.user_properties.append(("operator_after_upgrade", upgrade["runs"]))
    before = {n.node_id: n for n in upgrade["before"]}
    after = {n.node_id: n for n in upgrade["after"]}
    lost = sorted(before[i].describe() for i in before.keys() - after.keys())
    new = sorted(after[i].describe() for i in after.keys() - before.keys())
    changed = lost + new
    assert not changed, (
        f"{asked.operator} {asked.from_version} -> {asked.to_version} ({upgrade['runs']}) "
        f"changed the Ray nodes: gone {', '.join(lost) or 'none'}; new {', '.join(new) or 'none'}"
    )
    assert len(after) == ray_cluster.expected_nodes, (
        f"{len(after)} of {ray_cluster.expected_nodes} Ray node(s) alive after the upgrade: "
        + "; ".join(n.describe() for n in after.values())
    )


def test_operator_upgrade_new_operator_reconciles(
    upgrade: dict[str, Any],
    ray_provisioner: Provisioner,
    ray_spec: ClusterSpec,
    request: pytest.FixtureRequest,
) -> None:
    """The upgraded operator reconciles the cluster it did not create."""
    asked: OperatorUpgrade = upgrade["asked"]
    assert isinstance(ray_provisioner, SupportsOperatorUpgrade)
    try:
        seen = ray_provisioner.reconcile_probe(ray_spec.timeouts.node_join)
    except RuntimeError as exc:
        pytest.fail(
            f"{asked.operator} {asked.to_version} ({upgrade['runs']}) does not reconcile the "
            f"cluster made under {asked.from_version}: {exc}",
            pytrace=False,
        )
    request.node.user_properties.append(("operator_reconciled", seen))


def test_operator_upgrade_counter_passes_after(
    upgrade: dict[str, Any],
    ray_cluster: ClusterHandle,
    ray_provisioner: Provisioner,
    ray_run_in_cluster: Any,
    ray_spread_iterations: int,
    ray_spread_tasks: int,
    ray_spec: ClusterSpec,
    request: pytest.FixtureRequest,
) -> None:
    """After the upgrade every node still runs work sent from inside the cluster."""
    extra = headroom(ray_provisioner)  # nodes an autoscaler added for the load may be alive too
    output = ray_run_in_cluster(
        spread_source(ray_spread_iterations, ray_spread_tasks, ray_spec.timeouts.job)
    )
    properties = request.node.user_properties
    check_spread(parse_result(output), ray_cluster, "after-upgrade", properties, extra)
