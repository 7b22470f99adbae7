"""An autoscaled worker type in a cloud's cluster YAML: the head's own autoscaler adds its
workers for queued work and removes them once idle, as on a user's cloud account.

The type starts at zero workers and carries a resource no other node has, so the autoscaling
check's work can only run on workers the autoscaler launches, whatever the fixed nodes' size.
"""

from __future__ import annotations

import copy
from typing import Any

from provisioners.contract.base import (
    INVENTORY_ERROR,
    AutoscalingLimits,
    ClusterSpec,
    InventoryItem,
    ProvisionError,
)
from provisioners.contract.options import Option
from provisioners.deployers.launcher.driver import RayUpRun

# 0.2 min: NOTES measured removal ~20 s after work ended (fake provider).
IDLE_TIMEOUT = Option.seconds(
    "idle-timeout", "Seconds an idle worker lives before the autoscaler removes it", 12.0
)
AUTOSCALE_MAX = Option.integer(
    "cloud-autoscale-max",
    "aws, ibm: most workers the head's autoscaler may add, in a node type of their own that "
    "only the autoscaling check's work asks for (0: none)",
    1,
    minimum=0,
)
#: The autoscaled type's name, and the resource one of its workers has one unit of.
NODE_TYPE = "ray_worker_autoscaled"
RESOURCE = "rc_autoscaled"
#: Instance states once termination or deletion was asked for (EC2's, IBM VPC's).
LEAVING = frozenset({"shutting-down", "terminated", "deleting", "deleted"})


def add_node_type(config: dict[str, Any], max_workers: int, idle_s: float) -> None:
    """Add the autoscaled type, a copy of the first worker type's machine, to ``config``."""
    types: dict[str, Any] = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    like = next((t for name, t in types.items() if name != head), None)
    if like is None:
        raise ProvisionError("the cluster YAML has no worker node type to copy for autoscaling")
    if NODE_TYPE in types:
        raise ProvisionError(f"the cluster YAML already has a node type {NODE_TYPE!r}")
    node = copy.deepcopy(like)
    # No CPU, one unit of the resource: each worker runs one of the check's tasks at a time,
    # and other work (the spread counter's) never makes the autoscaler add one.
    node.update(min_workers=0, max_workers=max_workers, resources={"CPU": 0, RESOURCE: 1})
    types[NODE_TYPE] = node
    fixed = sum(int(t.get("min_workers", 0)) for name, t in types.items() if name != NODE_TYPE)
    config["max_workers"] = max(int(config.get("max_workers", 0)), fixed + max_workers)
    config["idle_timeout_minutes"] = idle_s / 60.0


def limits(spec: ClusterSpec, max_workers: int) -> AutoscalingLimits:
    idle_s: float = spec.get(IDLE_TIMEOUT)
    return AutoscalingLimits(
        min_workers=0,
        max_workers=max_workers,
        cpus_per_worker=0.0,
        head_cpus=0.0,  # unknown and irrelevant: only the new workers have the resource
        idle_timeout_s=idle_s,
        # An instance launched, reached over SSH and Ray started on it: a node's join.
        scale_up_timeout_s=spec.timeouts.node_join,
        scale_down_timeout_s=idle_s + spec.timeouts.node_join,
        resource=RESOURCE,
    )


def instances_not_nodes(inventory: list[InventoryItem], alive_ips: set[str]) -> list[str]:
    """The run's instances that are not alive Ray nodes (launched and never joined, or drained
    and never terminated), described; a listing that failed raises instead of reading as none.

    Each instance item's detail ends with its private address (``"running 172.31.3.4"``).
    """
    found = []
    for item in inventory:
        if item.kind == INVENTORY_ERROR:
            raise RuntimeError(str(item))
        words = item.detail.split()
        if item.kind != "instance" or LEAVING & set(words):
            continue
        if not words or words[-1] not in alive_ips:
            found.append(f"instance {item.name} ({item.detail}): not an alive Ray node")
    return found


class CloudAutoscaling:
    """The autoscaled type on a cloud's machine source: the limits (``SupportsAutoscaling``) and
    the instances that are no nodes (``SupportsPendingNodes``) over its own instance listing.

    A mixin of the source; the mode's ability methods delegate here in one line each.
    """

    _autoscale_max = 0  # workers the head's autoscaler may add (its own node type)
    _autoscale_spec: ClusterSpec | None = None

    def cloud_instances(self, run: RayUpRun) -> list[InventoryItem]:
        """The run's instances as the cloud lists them (an item per instance)."""
        raise NotImplementedError

    def add_autoscaled_type(self, spec: ClusterSpec, config: dict[str, Any]) -> None:
        """Add the type to the user's cluster YAML, when ``--ray-cloud-autoscale-max`` asks."""
        self._autoscale_spec = spec
        self._autoscale_max = spec.get(AUTOSCALE_MAX) or 0
        if self._autoscale_max:
            add_node_type(config, self._autoscale_max, spec.get(IDLE_TIMEOUT))

    def autoscaling_limits(self) -> AutoscalingLimits | None:
        """The head's autoscaler on the run's autoscaled node type; None without one."""
        if not self._autoscale_max or self._autoscale_spec is None:
            return None
        return limits(self._autoscale_spec, self._autoscale_max)

    def pending_nodes(self, run: RayUpRun) -> list[str]:
        """Instances of the run that are not alive Ray nodes: one the autoscaler launched and
        never joined, or one it drained and never terminated."""
        alive = {str(n["ip"]) for n in run.alive_nodes()}
        return instances_not_nodes(self.cloud_instances(run), alive)
