"""Mode ``kube-operator``: KubeRay and one RayCluster on a Kubernetes cluster someone runs.

For vendors of Kubernetes platforms: ``--ray-kubeconfig`` (and ``--ray-kube-context``) name the
cluster. The run creates a namespace of its own and what it installs there (KubeRay's CRDs and
operator, unless ``--ray-operator-install none`` uses the cluster's own), and deletes only
those. The cluster's nodes must be able to pull the Ray image (``--ray-image``, default Ray's
official one for this client) and the operator image.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioners.contract.base import NightlyRun
from provisioners.contract.options import Option
from provisioners.deployers.operator import OperatorMode, mode_options
from provisioners.sources.kube import ExistingSource


class KubeOperatorProvisioner(OperatorMode):
    """KubeRay on an existing cluster, reached by kubeconfig."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = mode_options(ExistingSource())
    NIGHTLY: ClassVar[tuple[NightlyRun, ...]] = (NightlyRun("secrets"),)

    def __init__(self) -> None:
        super().__init__(ExistingSource())
