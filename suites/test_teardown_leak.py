"""Teardown-leak: after teardown nothing this run created remains."""

from __future__ import annotations

import pytest

from provisioners.base import ClusterHandle, InventoryItem, Provisioner

# Every check here is in the certification profile (reports/certify.py PROFILE).
pytestmark = pytest.mark.ray_certification


def test_inventory_sees_the_running_cluster(
    ray_cluster: ClusterHandle, ray_provisioner: Provisioner, ray_spec: object
) -> None:
    """Before teardown the inventory must find the cluster, or an empty leak check proves nothing."""
    if not ray_cluster.owned:
        pytest.skip(
            f"{ray_cluster.mode}: this run did not create the cluster, so there is nothing of its own to inventory"
        )
    items = ray_provisioner.inventory()
    assert items, (
        f"{ray_cluster.mode}: inventory() finds nothing while the cluster runs; the leak check would be blind"
    )
    untagged = [str(i) for i in items if not i.run_id]
    assert not untagged, f"inventory items without a run id: {untagged}"


@pytest.mark.ray_teardown
def test_teardown_leaves_nothing_behind(
    ray_cluster: ClusterHandle, ray_teardown: list[InventoryItem]
) -> None:
    """After teardown the inventory finds nothing this run created."""
    assert not ray_teardown, (
        f"{ray_cluster.mode}: teardown left {len(ray_teardown)} thing(s) behind:\n"
        + "\n".join(f"  {item}" for item in ray_teardown)
    )
