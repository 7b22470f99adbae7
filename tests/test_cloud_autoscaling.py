"""The autoscaled node type the cloud modes add, and how they tell an instance from a node."""

from __future__ import annotations

import pytest

from provisioners.contract.base import INVENTORY_ERROR, InventoryItem, ProvisionError
from provisioners.deployers.launcher import autoscaling
from provisioners.deployers.launcher.autoscaling import instances_not_nodes

RUN = "r1"


def _instance(iid: str, detail: str) -> InventoryItem:
    return InventoryItem("instance", iid, RUN, detail)


def test_an_instance_that_is_no_alive_node_is_named() -> None:
    inventory = [
        _instance("i-head", "running 172.31.0.10"),
        _instance("i-joined", "running 172.31.0.11"),
        _instance("i-never", "running 172.31.0.12"),  # launched, Ray never joined
        _instance("i-booting", "pending"),  # no address yet
        _instance("i-going", "shutting-down 172.31.0.13"),
        _instance("ibm-gone", "ray-c-worker-1 deleting 10.240.0.5"),
        InventoryItem("security-group", "sg-1", RUN, "ray-autoscaler-c"),
    ]
    found = instances_not_nodes(inventory, {"172.31.0.10", "172.31.0.11"})
    assert found == [
        "instance i-never (running 172.31.0.12): not an alive Ray node",
        "instance i-booting (pending): not an alive Ray node",
    ]
    assert instances_not_nodes(inventory[:2], {"172.31.0.10", "172.31.0.11"}) == []


def test_a_listing_that_failed_is_never_read_as_none() -> None:
    failed = InventoryItem(INVENTORY_ERROR, "EC2 instances", RUN, "AccessDenied")
    with pytest.raises(RuntimeError, match="could not list EC2 instances: AccessDenied"):
        instances_not_nodes([failed], set())


def test_the_type_copies_the_workers_machine_and_starts_from_none() -> None:
    config = {
        "max_workers": 2,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"node_config": {"InstanceType": "m5.xlarge"}},
            "workers": {
                "min_workers": 2,
                "max_workers": 2,
                "node_config": {"InstanceType": "m5.large"},
            },
        },
    }
    autoscaling.add_node_type(config, 3, 30.0)
    scaled = config["available_node_types"][autoscaling.NODE_TYPE]  # type: ignore[index]
    assert scaled == {
        "min_workers": 0,
        "max_workers": 3,
        "resources": {"CPU": 0, autoscaling.RESOURCE: 1},
        "node_config": {"InstanceType": "m5.large"},
    }
    assert config["max_workers"] == 5  # the fixed workers and the autoscaled ones
    assert config["idle_timeout_minutes"] == 0.5


def test_a_yaml_without_a_worker_type_is_refused() -> None:
    config = {"head_node_type": "head", "available_node_types": {"head": {}}}
    with pytest.raises(ProvisionError, match="no worker node type to copy"):
        autoscaling.add_node_type(config, 1, 12.0)
