"""Mode ``kube-operator``: KubeRay and one RayCluster on a Kubernetes cluster someone runs.

For vendors of Kubernetes platforms: ``--ray-kubeconfig`` (and ``--ray-kube-context``) name the
cluster. The run creates a namespace of its own and what it installs there (KubeRay's CRDs and
operator, unless ``--ray-operator-install none`` uses the cluster's own), and deletes only
those. The cluster's nodes must be able to pull the Ray image (``--ray-image``, default Ray's
official one for this client) and the operator image.
"""

from __future__ import annotations

import shutil
from typing import Any, ClassVar

from provisioners import nodeimage
from provisioners.base import ClusterSpec, IngressRoute
from provisioners.kube import ingress
from provisioners.kube.clusters import ExistingCluster
from provisioners.kube.kuberay import KubeRayDeployer
from provisioners.kube.mode import OPERATOR_UPGRADE_FROM, OperatorMode
from provisioners.options import Option

KUBECONFIG = Option.file("kubeconfig", "kube-operator: kubeconfig of the cluster to test")
KUBE_CONTEXT = Option.string(
    "kube-context", "kube-operator: context in the kubeconfig (default: its current)"
)
KUBECTL = Option.file("kubectl", "kube-operator: the kubectl to use (default: the one on PATH)")


class KubeOperatorProvisioner(OperatorMode):
    """KubeRay on an existing cluster, reached by kubeconfig."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (
        *OperatorMode.OPTIONS,
        OPERATOR_UPGRADE_FROM,
        KUBECONFIG,
        KUBE_CONTEXT,
        KUBECTL,
        ingress.INGRESS_HOST,
        ingress.INGRESS_CLASS,
        nodeimage.IMAGE,
    )

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing = []
        if spec.get(KUBECONFIG) is None:
            missing.append("kube-operator: no --ray-kubeconfig given (the cluster to test)")
        if spec.get(KUBECTL) is None and shutil.which("kubectl") is None:
            missing.append("kube-operator: `kubectl` is not on PATH (or give --ray-kubectl)")
        return missing

    def make_cluster(self, spec: ClusterSpec) -> ExistingCluster:
        kubeconfig = spec.get(KUBECONFIG)
        assert kubeconfig is not None
        kubectl = spec.get(KUBECTL)
        return ExistingCluster(
            kubeconfig=kubeconfig,
            context=spec.get(KUBE_CONTEXT),
            workdir=spec.workdir / "kube",
            kubectl=str(kubectl) if kubectl else None,
        )

    def deploy_ingress(
        self, spec: ClusterSpec, deployer: KubeRayDeployer, kube_version: str, timeout: float
    ) -> IngressRoute | None:
        address = spec.get(ingress.INGRESS_HOST)
        if not address:
            return None
        return ingress.user_route(deployer, address, spec.get(ingress.INGRESS_CLASS), kube_version)

    def node_image(self, spec: ClusterSpec, timeout: float) -> str:
        # The cluster's nodes pull it: nothing to build or load from here.
        return spec.get(nodeimage.IMAGE) or nodeimage.official_image(nodeimage.client_ray_version())
