"""Mode ``kind-operator``: a kind cluster of the run, KubeRay on it, one RayCluster.

The book's path: ``kind create cluster``, the Ray operator (CRDs, then the operator), a
RayCluster, a Job running the in-cluster counter against ``<cluster>-head-svc``, and
``kubectl port-forward`` of 10001 and 8265. kind, kubectl, the node image and the operator
image come from :mod:`provisioners.kube.toolchain` (built offline from Go modules and Debian
packages, once per machine); the Ray image is the shared node image, loaded with ``kind load``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioners.contract.base import NightlyRun
from provisioners.contract.options import Option
from provisioners.deployers.operator import OperatorMode, mode_options
from provisioners.sources.kube import KindSource


class KindOperatorProvisioner(OperatorMode):
    """KubeRay on a kind cluster created for the run (or ``--ray-kind-cluster``)."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = mode_options(KindSource())
    NIGHTLY: ClassVar[tuple[NightlyRun, ...]] = (NightlyRun("kind"),)

    def __init__(self) -> None:
        super().__init__(KindSource())
