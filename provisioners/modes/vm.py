"""Mode ``vm``: ``ray up`` with Ray's ``local`` provider, over SSH, onto existing machines.

A composition: the SSH ``ray up`` deployer (:mod:`provisioners.deployers.launcher`) given
:class:`VmMachines` (:mod:`provisioners.sources.vm`, whose docstring tells the mode's whole
story), plus one-line delegations for the abilities only its source has.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioners.contract.base import NodeAddresses
from provisioners.contract.options import Option
from provisioners.deployers.launcher import SshRayUpMode
from provisioners.sources.vm import VmMachines


class VmProvisioner(SshRayUpMode[VmMachines]):
    """``ray up`` over SSH onto containers (default) or the user's hosts: the SSH deployer
    given :class:`VmMachines`."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = VmMachines.OPTIONS

    def __init__(self) -> None:
        super().__init__(VmMachines())

    def node_addresses(self) -> list[NodeAddresses]:
        return self.source.node_addresses(self.run)

    def probe_from_outside(
        self, targets: list[tuple[str, int]], timeout: float
    ) -> set[tuple[str, int]]:
        return self.source.probe_from_outside(targets, timeout)

    def kill_head(self) -> str:
        return self.source.kill_head(self.run)

    def recovers_head(self) -> bool:
        return False  # nothing restarts a `ray up` head on these machines
