"""Mode ``ibm``: ``ray up`` on IBM Cloud VPC through the Gen2 connector, as the book does.

A composition: the SSH ``ray up`` deployer (:mod:`provisioners.deployers.launcher`) given
:class:`IbmMachines` (:mod:`provisioners.sources.ibm`, whose docstring tells the mode's whole
story), plus one-line delegations for the abilities only its source has.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioners.contract.base import AutoscalingLimits, InventoryItem, NightlyRun
from provisioners.contract.options import Option
from provisioners.deployers.launcher import SshRayUpMode
from provisioners.sources.ibm import COMPAT, REHEARSAL, IbmMachines


class IbmProvisioner(SshRayUpMode[IbmMachines]):
    """``ray up`` on IBM Cloud VPC through the Gen2 connector (an external node provider): the
    SSH deployer given :class:`IbmMachines`."""

    NIGHTLY: ClassVar[tuple[NightlyRun, ...]] = (
        NightlyRun("secrets"),
        NightlyRun("root", "ibm-rehearsal", (REHEARSAL.flag, COMPAT.flag)),
    )
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = IbmMachines.OPTIONS

    def __init__(self) -> None:
        super().__init__(IbmMachines())

    def autoscaling_limits(self) -> AutoscalingLimits | None:
        return self.source.autoscaling_limits()

    def pending_nodes(self) -> list[str]:
        return self.source.pending_nodes(self.run)

    def cloud_instances(self) -> list[InventoryItem]:
        return self.source.cloud_instances(self.run)
