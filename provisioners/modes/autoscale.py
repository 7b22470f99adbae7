"""Mode ``autoscale``: Ray's ``fake_multinode`` autoscaler on this machine.

A composition: the ``ray up`` deployer (:mod:`provisioners.deployers.launcher`) given
:class:`AutoscaleMachines` (:mod:`provisioners.sources.fake_provider`, whose docstring tells the
mode's whole story), plus one-line delegations for the abilities only its source has.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioners.contract.base import AutoscalingLimits
from provisioners.contract.options import Option
from provisioners.deployers.launcher import RayUpMode
from provisioners.sources.fake_provider import AutoscaleMachines


class AutoscaleProvisioner(RayUpMode[AutoscaleMachines]):
    """Head plus on-demand fake workers: the ``ray up`` deployer given :class:`AutoscaleMachines`."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = AutoscaleMachines.OPTIONS

    def __init__(self) -> None:
        super().__init__(AutoscaleMachines())

    def autoscaling_limits(self) -> AutoscalingLimits:
        return self.source.autoscaling_limits()
