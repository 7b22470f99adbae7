"""Where an operator mode's Kubernetes cluster comes from: a kind cluster of the run, or one
someone runs. A source also says how the Ray and operator images reach the cluster's nodes and
what it can put in front of the head; it never names a mode (the mode prefixes its messages).
"""

from __future__ import annotations

import shutil
from typing import Any

from provisioners.contract.base import ClusterSpec, IngressRoute, ProvisionError
from provisioners.contract.options import Option
from provisioners.deployers import ingress
from provisioners.deployers.kuberay import KubeRayDeployer, OperatorSource, RaySize
from provisioners.deployers.launcher.autoscaling import IDLE_TIMEOUT
from provisioners.deployers.operator import (
    OPERATOR_IMAGE,
    OPERATOR_INSTALL,
    OPERATOR_UPGRADE_FROM,
    OPERATOR_VERSION,
    UPSTREAM_OPERATOR_REPO,
    KubeSource,
    module_manifests,
    unique_options,
)
from provisioners.kube import artifacts
from provisioners.kube.clusters import ClusterProvider, ExistingCluster, KindCluster
from provisioners.kube.toolchain import ToolchainUnavailable
from provisioners.kube.toolchain.build import KUBERAY_VERSION, go_binary
from provisioners.util import containers, nodeimage, runstate
from provisioners.util.naming import run_name

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
KUBECONFIG = Option.file("kubeconfig", "kube-operator: kubeconfig of the cluster to test")
KUBE_CONTEXT = Option.string(
    "kube-context", "kube-operator: context in the kubeconfig (default: its current)"
)
KUBECTL = Option.file("kubectl", "kube-operator: the kubectl to use (default: the one on PATH)")


class KindSource:
    """A kind cluster of the run (or ``--ray-kind-cluster``), everything built offline once per
    machine and cached: kind, Kubernetes, KubeRay, the Ray image, and with ``extras`` Traefik in
    front of the head and a worker group KubeRay's autoscaler scales."""

    def __init__(self, *, extras: bool = True) -> None:
        self.extras = extras

    def options(self) -> tuple[Option[Any], ...]:
        images = (nodeimage.IMAGE, nodeimage.IMAGE_BUILD, containers.DOCKER_HOST)
        if not self.extras:
            return (TOOLCHAIN_TIMEOUT, *images)
        extra = (INGRESS, AUTOSCALE_MAX, IDLE_TIMEOUT)
        return (OPERATOR_UPGRADE_FROM, KIND_CLUSTER, TOOLCHAIN_TIMEOUT, *extra, *images)

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing = []
        if problem := containers.engine_problem(spec.get(containers.DOCKER_HOST)):
            missing.append(problem)
        if go_binary() is None:
            missing.append(
                "`go` is not on PATH (kind, kubectl, the kind node image and KubeRay are built "
                "from Go modules here; install Go 1.24+)"
            )
        return missing

    def make_cluster(self, spec: ClusterSpec) -> KindCluster:
        reuse = spec.get(KIND_CLUSTER) if self.extras else None
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

    def prepare(self, spec: ClusterSpec, cluster: ClusterProvider) -> None:
        assert isinstance(cluster, KindCluster)
        bound = spec.get(TOOLCHAIN_TIMEOUT)
        cluster.prepare(bound)
        if self.extras and spec.get(INGRESS) == "traefik":
            self._traefik(spec, bound)
        if spec.get(OPERATOR_INSTALL) == "manifests":  # other KubeRay releases, built once too
            for version in {spec.get(OPERATOR_VERSION), spec.get(OPERATOR_UPGRADE_FROM)}:
                if version is not None:
                    offline_operator(cluster, spec, bound, version)

    def node_image(self, spec: ClusterSpec, timeout: float) -> str:
        return nodeimage.node_image_for(spec, timeout)

    def operator_source(
        self, spec: ClusterSpec, cluster: ClusterProvider, timeout: float, version: str
    ) -> OperatorSource | None:
        if spec.get(OPERATOR_INSTALL) == "none":
            return None
        assert isinstance(cluster, KindCluster)
        return offline_operator(cluster, spec, timeout, version)

    def ray_size(self, spec: ClusterSpec, workers: int) -> RaySize:
        if not self.extras:
            return RaySize(workers=workers)
        return RaySize(
            workers=workers,
            autoscale_max=spec.get(AUTOSCALE_MAX) or 0,
            idle_timeout_s=max(1, round(float(spec.get(IDLE_TIMEOUT)))),
        )

    def deploy_ingress(
        self,
        spec: ClusterSpec,
        cluster: ClusterProvider,
        deployer: KubeRayDeployer,
        kube_version: str,
        timeout: float,
    ) -> IngressRoute | None:
        if not self.extras or spec.get(INGRESS) == "none":
            return None
        assert isinstance(cluster, KindCluster)
        image = self._traefik(spec, timeout)
        cluster.load_image(image, timeout)
        return ingress.deploy_traefik(
            deployer, image, cluster.node_address(), kube_version, timeout
        )

    def _traefik(self, spec: ClusterSpec, timeout: float) -> str:
        try:
            return artifacts.ensure_traefik(spec.progress, timeout).image
        except ToolchainUnavailable as exc:
            raise ProvisionError(f"ingress controller: {exc}") from None


class ExistingSource:
    """A cluster someone runs, reached by ``--ray-kubeconfig``: its nodes pull the images; the
    run deletes only what it made in its own namespace. With ``extras``, the operator upgrade
    and the user's own ingress in front of the head (``--ray-ingress-host``)."""

    def __init__(self, *, extras: bool = True) -> None:
        self.extras = extras

    def options(self) -> tuple[Option[Any], ...]:
        reach = (KUBECONFIG, KUBE_CONTEXT, KUBECTL)
        if not self.extras:
            return (*reach, nodeimage.IMAGE)
        ingresses = (ingress.INGRESS_HOST, ingress.INGRESS_CLASS)
        return (OPERATOR_UPGRADE_FROM, *reach, *ingresses, nodeimage.IMAGE)

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing = []
        if spec.get(KUBECONFIG) is None:
            missing.append("no --ray-kubeconfig given (the cluster to test)")
        if spec.get(KUBECTL) is None and shutil.which("kubectl") is None:
            missing.append("`kubectl` is not on PATH (or give --ray-kubectl)")
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

    def prepare(self, spec: ClusterSpec, cluster: ClusterProvider) -> None:
        """Nothing to build here: the cluster's nodes pull what they run."""

    def node_image(self, spec: ClusterSpec, timeout: float) -> str:
        return spec.get(nodeimage.IMAGE) or nodeimage.official_image(nodeimage.client_ray_version())

    def operator_source(
        self, spec: ClusterSpec, cluster: ClusterProvider, timeout: float, version: str
    ) -> OperatorSource | None:
        """KubeRay ``version``: its manifests from its module, its image (``--ray-operator-image``
        names the one of ``--ray-operator-version``, not of an older release upgraded from)."""
        if spec.get(OPERATOR_INSTALL) == "none":
            return None
        manifests = module_manifests(version, timeout)
        given = spec.get(OPERATOR_IMAGE) if version == spec.get(OPERATOR_VERSION) else None
        return OperatorSource(version, manifests, given or f"{UPSTREAM_OPERATOR_REPO}:{version}")

    def ray_size(self, spec: ClusterSpec, workers: int) -> RaySize:
        return RaySize(workers=workers)

    def deploy_ingress(
        self,
        spec: ClusterSpec,
        cluster: ClusterProvider,
        deployer: KubeRayDeployer,
        kube_version: str,
        timeout: float,
    ) -> IngressRoute | None:
        address = spec.get(ingress.INGRESS_HOST) if self.extras else None
        if not address:
            return None
        return ingress.user_route(deployer, address, spec.get(ingress.INGRESS_CLASS), kube_version)


class ChosenSource:
    """One of two sources, picked per run by a switch (``--ray-openshift-rehearsal``: kind)."""

    def __init__(self, switch: Option[bool], when_on: KubeSource, when_off: KubeSource) -> None:
        self.switch, self.when_on, self.when_off = switch, when_on, when_off

    def pick(self, spec: ClusterSpec) -> KubeSource:
        return self.when_on if spec.get(self.switch) else self.when_off

    def options(self) -> tuple[Option[Any], ...]:
        return unique_options(self.when_off.options(), (self.switch,), self.when_on.options())

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        found = self.pick(spec).missing_prerequisites(spec)
        if spec.get(self.switch):
            return found
        return [f"{m}; or --ray-{self.switch.name}" for m in found]

    def make_cluster(self, spec: ClusterSpec) -> ClusterProvider:
        return self.pick(spec).make_cluster(spec)

    def prepare(self, spec: ClusterSpec, cluster: ClusterProvider) -> None:
        self.pick(spec).prepare(spec, cluster)

    def node_image(self, spec: ClusterSpec, timeout: float) -> str:
        return self.pick(spec).node_image(spec, timeout)

    def operator_source(
        self, spec: ClusterSpec, cluster: ClusterProvider, timeout: float, version: str
    ) -> OperatorSource | None:
        return self.pick(spec).operator_source(spec, cluster, timeout, version)

    def ray_size(self, spec: ClusterSpec, workers: int) -> RaySize:
        return self.pick(spec).ray_size(spec, workers)

    def deploy_ingress(
        self,
        spec: ClusterSpec,
        cluster: ClusterProvider,
        deployer: KubeRayDeployer,
        kube_version: str,
        timeout: float,
    ) -> IngressRoute | None:
        return self.pick(spec).deploy_ingress(spec, cluster, deployer, kube_version, timeout)


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
