"""Mode ``kind-operator``: a kind cluster of the run, KubeRay on it, one RayCluster.

The book's path: ``kind create cluster``, the Ray operator (CRDs, then the operator), a
RayCluster, a Job running the in-cluster counter against ``<cluster>-head-svc``, and
``kubectl port-forward`` of 10001 and 8265. kind, kubectl, the node image and the operator
image come from :mod:`provisioners.kube.toolchain` (built offline from Go modules and Debian
packages, once per machine); the Ray image is the shared node image, loaded with ``kind load``.
"""

from __future__ import annotations

import shutil
from typing import Any, ClassVar

from provisioners import containers, nodeimage, runstate
from provisioners.base import ClusterSpec, IngressRoute, ProvisionError
from provisioners.kube import artifacts, ingress
from provisioners.kube.clusters import KindCluster
from provisioners.kube.kuberay import KubeRayDeployer, OperatorSource, RaySize
from provisioners.kube.mode import (
    KUBERAY_VERSION,
    OPERATOR_IMAGE,
    OPERATOR_INSTALL,
    OPERATOR_UPGRADE_FROM,
    OPERATOR_VERSION,
    OperatorMode,
)
from provisioners.kube.toolchain import ToolchainUnavailable
from provisioners.launcher.autoscaling import IDLE_TIMEOUT
from provisioners.naming import run_name
from provisioners.options import Option

KIND_CLUSTER = Option.string(
    "kind-cluster", "kind-operator: reuse this kind cluster (nothing of it is deleted)"
)
TOOLCHAIN_TIMEOUT = Option.seconds(
    "kind-build-timeout",
    "kind-operator: bound for the one-time offline build of kind, Kubernetes and KubeRay (about 15 min cold on 2 cores)",
    2400.0,
)
AUTOSCALE_MAX = Option.integer(
    "kube-autoscale-max",
    "kind-operator: most workers KubeRay's in-tree autoscaler may add, in a group of its own "
    "(0: no autoscaler)",
    2,
    minimum=0,
)
INGRESS = Option.choice(
    "ingress",
    f"kind-operator: the ingress controller put in front of the head (Traefik {artifacts.TRAEFIK_VERSION}, built from its Go module), or none",
    ("traefik", "none"),
    "traefik",
)


class KindOperatorProvisioner(OperatorMode):
    """KubeRay on a kind cluster created for the run (or ``--ray-kind-cluster``)."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (
        *OperatorMode.OPTIONS,
        OPERATOR_UPGRADE_FROM,
        KIND_CLUSTER,
        TOOLCHAIN_TIMEOUT,
        INGRESS,
        AUTOSCALE_MAX,
        IDLE_TIMEOUT,
        nodeimage.IMAGE,
        nodeimage.IMAGE_BUILD,
        containers.DOCKER_HOST,
    )

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing = []
        if problem := containers.engine_problem(spec.get(containers.DOCKER_HOST)):
            missing.append(f"kind-operator: {problem}")
        if shutil.which("go") is None and not _go_beside():
            missing.append(
                "kind-operator: `go` is not on PATH (kind, kubectl, the kind node image and "
                "KubeRay are built from Go modules here; install Go 1.24+)"
            )
        return missing

    def make_cluster(self, spec: ClusterSpec) -> KindCluster:
        reuse = spec.get(KIND_CLUSTER)
        return KindCluster(
            run_id=spec.run_id,
            # The mode in the name: kind-operator and openshift of one run (under -n) side by side.
            name=reuse or run_name(spec.run_id, spec.mode, "kind", limit=40),
            workdir=spec.workdir / "kind",
            progress=spec.progress,
            reuse=bool(reuse),
            mode=spec.mode,
            secrets_dir=runstate.private_dir(spec.run_id, spec.mode),
        )

    def prepare(self, spec: ClusterSpec) -> None:
        # Built once per machine and cached: not part of any one cluster's provision time.
        cluster = self._cluster
        assert isinstance(cluster, KindCluster)
        cluster.prepare(spec.get(TOOLCHAIN_TIMEOUT))
        if spec.get(INGRESS) == "traefik":
            self._traefik(spec, spec.get(TOOLCHAIN_TIMEOUT))
        if spec.get(OPERATOR_INSTALL) == "manifests":  # other KubeRay releases, built once too
            for version in {spec.get(OPERATOR_VERSION), spec.get(OPERATOR_UPGRADE_FROM)}:
                if version is not None:
                    offline_operator(cluster, spec, spec.get(TOOLCHAIN_TIMEOUT), version)

    def ray_size(self, spec: ClusterSpec, workers: int) -> RaySize:
        idle: float = spec.get(IDLE_TIMEOUT)
        return RaySize(
            workers=workers,
            autoscale_max=spec.get(AUTOSCALE_MAX) or 0,
            idle_timeout_s=max(1, round(idle)),
        )

    def _traefik(self, spec: ClusterSpec, timeout: float) -> str:
        try:
            return artifacts.ensure_traefik(spec.progress, timeout).image
        except ToolchainUnavailable as exc:
            raise ProvisionError(f"ingress controller: {exc}") from None

    def deploy_ingress(
        self, spec: ClusterSpec, deployer: KubeRayDeployer, kube_version: str, timeout: float
    ) -> IngressRoute | None:
        if spec.get(INGRESS) == "none":
            return None
        cluster = self._cluster
        assert isinstance(cluster, KindCluster)
        image = self._traefik(spec, timeout)
        cluster.load_image(image, timeout)
        return ingress.deploy_traefik(
            deployer, image, cluster.node_address(), kube_version, timeout
        )

    def node_image(self, spec: ClusterSpec, timeout: float) -> str:
        return nodeimage.ensure_node_image(
            spec.progress,
            timeout,
            image=spec.get(nodeimage.IMAGE),
            force_build=spec.get(nodeimage.IMAGE_BUILD),
            docker_host=spec.get(containers.DOCKER_HOST),
            run_id=spec.run_id,
        )

    def operator_source(
        self, spec: ClusterSpec, timeout: float, version: str
    ) -> OperatorSource | None:
        if spec.get(OPERATOR_INSTALL) == "none":
            return None
        cluster = self._cluster
        assert isinstance(cluster, KindCluster)
        return offline_operator(cluster, spec, timeout, version)


def offline_operator(
    cluster: KindCluster, spec: ClusterSpec, timeout: float, version: str
) -> OperatorSource:
    """KubeRay ``version`` built here: the toolchain's own release, else a cached artifact."""
    given = spec.get(OPERATOR_IMAGE) if version == spec.get(OPERATOR_VERSION) else None
    if version == KUBERAY_VERSION:
        tools = cluster.prepare(timeout)
        return OperatorSource(version, tools.operator_manifests, given or tools.operator_image)
    try:
        built = artifacts.ensure_kuberay(version, spec.progress, timeout)
    except ToolchainUnavailable as exc:
        raise ProvisionError(f"KubeRay {version}: {exc}") from None
    return OperatorSource(version, built.manifests, given or built.image)


def _go_beside() -> bool:
    from pathlib import Path

    return Path("/usr/local/go/bin/go").exists()
