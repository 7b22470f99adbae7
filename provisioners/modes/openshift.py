"""Mode ``openshift``: KubeRay and one RayCluster on OpenShift, with the book's changes.

A composition: OpenShift's rules (:class:`provisioners.rules.openshift.OpenShiftRules`) applied
to a cluster someone runs, or with ``--ray-openshift-rehearsal`` to a kind cluster of the run
with OpenShift's SCC API and SCCs installed and the run's namespace under Pod Security
Admission ``restricted``: the apiserver refuses any pod of the run that runs as root, may
escalate privileges, keeps a capability or names no seccomp profile.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioners.contract.base import NightlyRun
from provisioners.contract.options import Option
from provisioners.deployers.operator import OperatorMode, mode_options
from provisioners.rules.openshift import REHEARSAL, OpenShiftRules
from provisioners.sources.kube import ChosenSource, ExistingSource, KindSource


def openshift_source() -> ChosenSource:
    """The user's cluster, or with ``--ray-openshift-rehearsal`` a kind cluster of the run."""
    return ChosenSource(REHEARSAL, KindSource(extras=False), ExistingSource(extras=False))


class OpenShiftProvisioner(OperatorMode):
    """KubeRay on OpenShift (``--ray-kubeconfig``), or its rehearsal on kind."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = mode_options(openshift_source(), OpenShiftRules())
    NIGHTLY: ClassVar[tuple[NightlyRun, ...]] = (
        NightlyRun("secrets"),
        NightlyRun("kind", "openshift-rehearsal", (REHEARSAL.flag,)),
    )

    def __init__(self) -> None:
        super().__init__(openshift_source(), OpenShiftRules())
