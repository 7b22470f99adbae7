"""Mode ``docker``: the ``ray start`` deployer on containers of one engine.

``DockerProvisioner`` is :class:`provisioners.deployers.raystart.RayStartMode` given
:class:`provisioners.sources.docker.ContainerHosts`: the deployer owns Ray (its commands, ports,
waits, handle, port-forward, scripts, drain and head loss), the source owns the containers, the
run's network, its egress rules and their removal. The abilities only containers have (exec on a
node, shared memory, the image run, addresses off the network, a worker's loss) are the source's,
offered here by one-line delegations.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioners.contract.base import NodeAddresses
from provisioners.contract.options import Option
from provisioners.deployers.raystart import RayStartMode
from provisioners.sources.docker import ContainerHosts


class DockerProvisioner(RayStartMode):
    """Head plus ``--ray-workers`` (default 2) containers of the node image, one per node."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = ContainerHosts.OPTIONS
    hosts: ContainerHosts

    def __init__(self) -> None:
        super().__init__(ContainerHosts())

    def node_names(self) -> list[str]:
        return self.hosts.node_names()

    def node_exec(self, node: str, argv: list[str], timeout: float) -> str:
        return self.hosts.node_exec(node, argv, timeout)

    def node_addresses(self) -> list[NodeAddresses]:
        return self.hosts.node_addresses()

    def probe_from_outside(
        self, targets: list[tuple[str, int]], timeout: float
    ) -> set[tuple[str, int]]:
        return self.hosts.probe_from_outside(targets, timeout)

    def kill_worker(self) -> str:
        return self.hosts.kill_worker()

    def replaces_lost_nodes(self) -> bool:
        return self.hosts.replaces_lost_nodes()

    def shm_bytes_per_node(self) -> int:
        return self.hosts.shm_bytes_per_node()

    def shm_advice(self) -> str:
        return self.hosts.shm_advice()

    def image_run(self, argv: list[str], timeout: float) -> str:
        return self.hosts.image_run(argv, timeout)
