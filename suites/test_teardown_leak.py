"""Teardown-leak: after teardown nothing this run created remains.

An inventory that cannot list (an API or engine error) is no evidence of a clean teardown: such
an item (kind ``inventory-error``) fails both checks, naming what could not be listed and why.
"""

from __future__ import annotations

import pytest

from provisioners.contract.base import (
    INVENTORY_ERROR,
    ClusterHandle,
    ClusterSpec,
    InventoryItem,
    Provisioner,
    take_inventory,
)

# Every check here is in the certification profile (reports/certify.py PROFILE).
pytestmark = pytest.mark.ray_certification


def _unlisted(mode: str, items: list[InventoryItem]) -> str:
    failed = [f"  {item}" for item in items if item.kind == INVENTORY_ERROR]
    if not failed:
        return ""
    return f"{mode}: the inventory could not list everything, so it proves nothing:\n" + "\n".join(
        failed
    )


def test_inventory_sees_the_running_cluster(
    ray_cluster: ClusterHandle, ray_provisioner: Provisioner, ray_spec: ClusterSpec
) -> None:
    """Before teardown the inventory must find the cluster, or an empty leak check proves nothing."""
    if not ray_cluster.owned:
        pytest.skip(
            f"{ray_cluster.mode}: this run did not create the cluster, so there is nothing of its own to inventory"
        )
    items = take_inventory(ray_provisioner, ray_spec.run_id)
    unlisted = _unlisted(ray_cluster.mode, items)
    assert not unlisted, unlisted
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
    unlisted = _unlisted(ray_cluster.mode, ray_teardown)
    left = [item for item in ray_teardown if item.kind != INVENTORY_ERROR]
    problems = [unlisted] if unlisted else []
    if left:
        problems.append(
            f"{ray_cluster.mode}: teardown left {len(left)} thing(s) behind:\n"
            + "\n".join(f"  {item}" for item in left)
        )
    assert not problems, "\n".join(problems)
