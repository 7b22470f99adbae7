"""Mode ``aws``: ``ray up`` with Ray's aws provider, as the book does, or rehearsed on moto.

A composition: the SSH ``ray up`` deployer (:mod:`provisioners.deployers.launcher`) given
:class:`AwsMachines` (:mod:`provisioners.sources.aws`, whose docstring tells the mode's whole
story), plus one-line delegations for the abilities only its source has.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioners.contract.base import AutoscalingLimits, InventoryItem, NightlyRun
from provisioners.contract.options import Option
from provisioners.deployers.launcher import SshRayUpMode
from provisioners.sources.aws import REHEARSAL, AwsMachines


class AwsProvisioner(SshRayUpMode[AwsMachines]):
    """``ray up`` on AWS through Ray's aws provider, or its rehearsal on moto: the SSH
    deployer given :class:`AwsMachines`."""

    NIGHTLY: ClassVar[tuple[NightlyRun, ...]] = (
        NightlyRun("secrets"),
        NightlyRun("root", "aws-rehearsal", (REHEARSAL.flag,)),
    )
    OPTIONS: ClassVar[tuple[Option[Any], ...]] = AwsMachines.OPTIONS

    def __init__(self) -> None:
        super().__init__(AwsMachines())

    def autoscaling_limits(self) -> AutoscalingLimits | None:
        return self.source.autoscaling_limits()

    def pending_nodes(self) -> list[str]:
        return self.source.pending_nodes(self.run)

    def cloud_instances(self) -> list[InventoryItem]:
        return self.source.cloud_instances(self.run)
