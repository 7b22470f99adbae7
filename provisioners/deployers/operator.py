"""The operator modes: where the cluster comes from x KubeRay x a platform's rules.

An operator mode is :class:`OperatorMode` given a :class:`KubeSource` (a kind cluster of the
run, or one someone runs: ``provisioners/sources/kube.py``) and, where the platform has them,
:class:`PlatformRules` (OpenShift's SCC grants and fixed user: ``provisioners/rules/openshift.py``).
The Ray deployer is KubeRay (``provisioners/deployers/kuberay.py``). No mode builds another mode.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar, Protocol

from provisioners.contract.base import (
    CLIENT_PORT,
    RUN_ID_LABEL,
    AutoscalingLimits,
    ClusterHandle,
    ClusterSpec,
    Deadline,
    Endpoint,
    IngressRoute,
    InventoryItem,
    OperatorUpgrade,
    ProvisionError,
)
from provisioners.contract.options import Option
from provisioners.deployers import ingress
from provisioners.deployers.kuberay import GCS_PORT, KubeRayDeployer, OperatorSource, RaySize
from provisioners.kube.api import Kube
from provisioners.kube.clusters import ClusterProvider
from provisioners.kube.toolchain.build import KUBERAY_VERSION, go_binary
from provisioners.util import runstate
from provisioners.util.naming import run_name
from provisioners.util.runner import run

KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
#: The ray-operator releases the Go module proxy serves (listed 2026-12-03), oldest first; the
#: newest is the one the toolchain builds.
KUBERAY_VERSIONS = ("v1.4.0", KUBERAY_VERSION)
UPSTREAM_OPERATOR_REPO = "quay.io/kuberay/operator"
#: The teardown's first step (the RayCluster, then the operator) gets at most this share of the
#: teardown time; deleting the cluster gets the rest, so a hung API never keeps the cluster.
RAYCLUSTER_SHARE = 0.5

OPERATOR_INSTALL = Option.choice(
    "operator-install",
    "How kube modes get KubeRay: its release manifests (from its Go module), or none (the cluster's own)",
    ("manifests", "none"),
    "manifests",
)
OPERATOR_IMAGE = Option.string(
    "operator-image", "KubeRay operator image (default: the mode's; see README, Kubernetes)"
)
OPERATOR_VERSION = Option.choice(
    "operator-version",
    "KubeRay release the kube modes install, built from its Go module",
    KUBERAY_VERSIONS,
    KUBERAY_VERSION,
)


def _older_release(text: str) -> str:
    if text not in KUBERAY_VERSIONS[:-1]:
        raise ValueError(f"expected one of {', '.join(KUBERAY_VERSIONS[:-1])}")
    return text


OPERATOR_UPGRADE_FROM: Option[str | None] = Option(
    "operator-upgrade-from",
    "kind-operator, kube-operator: create the RayCluster under this older KubeRay; the upgrade "
    "check then upgrades the operator in place to --ray-operator-version",
    _older_release,
    None,
    metavar="|".join(KUBERAY_VERSIONS[:-1]),
)


def go_module_dir(module: str, version: str, timeout: float) -> Path:
    """The source of a Go module at ``version`` (from the module proxy, cached by Go)."""
    import json

    go = go_binary()
    if go is None:
        raise ProvisionError(f"{module} comes from its Go module: `go` is not on PATH")
    out = run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        timeout,
        what=f"go mod download {module}@{version}",
        env={"GOFLAGS": "-mod=mod", "GOWORK": "off"},
    )
    return Path(json.loads(out)["Dir"])


def module_manifests(version: str, timeout: float) -> Path:
    """KubeRay's ``ray-operator/config`` from its Go module."""
    return go_module_dir(KUBERAY_MODULE, version, timeout) / "config"


class KubeSource(Protocol):
    """Where the cluster comes from. Every method is given the spec; none names a mode."""

    def options(self) -> tuple[Option[Any], ...]:
        """The flags this source reads."""
        ...

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        """What this machine lacks for the source, each without a mode prefix."""
        ...

    def make_cluster(self, spec: ClusterSpec) -> ClusterProvider: ...

    def prepare(self, spec: ClusterSpec, cluster: ClusterProvider) -> None:
        """One-time work of the machine, bounded apart from the provision (a cold tool build)."""
        ...

    def node_image(self, spec: ClusterSpec, timeout: float) -> str:
        """The Ray image the pods run (the cluster's ``load_image`` makes it available)."""
        ...

    def operator_source(
        self, spec: ClusterSpec, cluster: ClusterProvider, timeout: float, version: str
    ) -> OperatorSource | None:
        """KubeRay ``version`` as this cluster gets it; None with ``--ray-operator-install none``."""
        ...

    def ray_size(self, spec: ClusterSpec, workers: int) -> RaySize:
        """The RayCluster's shape (a source may add a group KubeRay's autoscaler scales)."""
        ...

    def deploy_ingress(
        self,
        spec: ClusterSpec,
        cluster: ClusterProvider,
        deployer: KubeRayDeployer,
        kube_version: str,
        timeout: float,
    ) -> IngressRoute | None:
        """An ingress to the head (``provisioners/deployers/ingress.py``), where there is one."""
        ...


class PlatformRules(Protocol):
    """A platform's rules, applied to whatever cluster the source gives (OpenShift's on kind in
    the rehearsal, on the user's cluster for real). Messages carry no mode prefix."""

    def options(self) -> tuple[Option[Any], ...]: ...

    def missing_prerequisites(self, spec: ClusterSpec, source: KubeSource) -> list[str]:
        """Why this cluster cannot run the platform's rules (it is not that platform)."""
        ...

    def pod_defaults(self, spec: ClusterSpec) -> dict[str, Any]:
        """Pod settings every pod of the run gets (OpenShift's fixed user, for one)."""
        ...

    def deployer_settings(self, spec: ClusterSpec) -> dict[str, Any]:
        """More ``KubeRayDeployer`` settings (namespace labels, service accounts by role)."""
        ...

    def before_deploy(self, spec: ClusterSpec, deployer: KubeRayDeployer, timeout: float) -> None:
        """Cluster set-up needed before the operator and Ray pods (OpenShift's grants)."""
        ...

    def before_teardown(self, deployer: KubeRayDeployer) -> list[str]:
        """Undo what ``before_deploy`` did outside the run's objects; the problems, if any."""
        ...

    def inventory(self, deployer: KubeRayDeployer) -> list[InventoryItem]:
        """What of the rules' own objects still exists (grants, stand-ins)."""
        ...


class NoRules:
    """A platform with no rules of its own: plain Kubernetes."""

    def options(self) -> tuple[Option[Any], ...]:
        return ()

    def missing_prerequisites(self, spec: ClusterSpec, source: KubeSource) -> list[str]:
        return []

    def pod_defaults(self, spec: ClusterSpec) -> dict[str, Any]:
        return {}

    def deployer_settings(self, spec: ClusterSpec) -> dict[str, Any]:
        return {}

    def before_deploy(self, spec: ClusterSpec, deployer: KubeRayDeployer, timeout: float) -> None:
        return None

    def before_teardown(self, deployer: KubeRayDeployer) -> list[str]:
        return []

    def inventory(self, deployer: KubeRayDeployer) -> list[InventoryItem]:
        return []


def unique_options(*groups: tuple[Option[Any], ...]) -> tuple[Option[Any], ...]:
    """The options of ``groups``, each once (by name), in the order first seen."""
    seen: dict[str, Option[Any]] = {}
    for group in groups:
        for opt in group:
            seen.setdefault(opt.name, opt)
    return tuple(seen.values())


def mode_options(source: KubeSource, rules: PlatformRules | None = None) -> tuple[Option[Any], ...]:
    """A composed mode's flags: KubeRay's, the source's, the rules' (each once, in order)."""
    return unique_options(OperatorMode.OPTIONS, source.options(), rules.options() if rules else ())


class OperatorMode:
    """A RayCluster by KubeRay on the cluster ``source`` gives, under ``rules`` if any."""

    OPTIONS: ClassVar[tuple[Option[Any], ...]] = (
        OPERATOR_INSTALL,
        OPERATOR_IMAGE,
        OPERATOR_VERSION,
    )

    def __init__(self, source: KubeSource, rules: PlatformRules | None = None) -> None:
        self.source = source
        self.rules: PlatformRules = rules or NoRules()
        self._spec: ClusterSpec | None = None
        self._cluster: ClusterProvider | None = None
        self._kube: Kube | None = None
        self._deployer: KubeRayDeployer | None = None
        self._held = False  # this provision holds the run (runstate)
        self._ingress: IngressRoute | None = None
        self._upgrade_to: OperatorSource | None = None  # --ray-operator-upgrade-from: the newer
        self._kube_version = ""

    # -- Provisioner --------------------------------------------------------------------

    def missing_prerequisites(self, spec: ClusterSpec) -> list[str]:
        missing = self.source.missing_prerequisites(spec)
        return missing or self.rules.missing_prerequisites(spec, self.source)

    def provision(self, spec: ClusterSpec) -> ClusterHandle:
        self._spec = spec
        runstate.hold(spec.run_id)
        self._held = True
        source = self.source
        cluster = self._cluster = source.make_cluster(spec)
        source.prepare(spec, cluster)  # one-time work, bounded apart from the provision
        deadline = spec.provisioning().deadline  # so the provision's clock starts after it
        workers = spec.worker_count()
        # Images first: a cluster should not sit idle while they build.
        image = source.node_image(spec, deadline.left())
        target, older = spec.get(OPERATOR_VERSION), spec.get(OPERATOR_UPGRADE_FROM)
        if older is not None and KUBERAY_VERSIONS.index(older) >= KUBERAY_VERSIONS.index(target):
            raise ProvisionError(
                f"--ray-operator-upgrade-from {older} is not older than --ray-operator-version {target}"
            )
        operator = source.operator_source(spec, cluster, deadline.left(), older or target)
        self._upgrade_to = (
            source.operator_source(spec, cluster, deadline.left(), target) if older else None
        )
        local = [image]
        for op in (operator, self._upgrade_to):
            if op is not None and not op.image.startswith(f"{UPSTREAM_OPERATOR_REPO}:"):
                local.append(op.image)
        cluster.preload(local, deadline.left())  # into the node image, where the cluster allows
        kube = self._kube = cluster.create(deadline.left())
        namespace = run_name(spec.run_id, spec.mode)
        if not cluster.owned:
            # Before anything is applied: where a sweep after a crash finds the run's objects
            # on a cluster that outlives the run.
            runstate.note(
                spec.run_id,
                spec.mode,
                "kube",
                kubeconfig=str(kube.kubeconfig),
                context=kube.context,
                namespace=namespace,
            )
        t0 = time.monotonic()
        version = self._kube_version = kube.server_version(
            min(spec.timeouts.preflight, deadline.left())
        )
        spec.progress(
            f"Kubernetes {version} answers at {kube.where()} ({time.monotonic() - t0:.1f} s)"
        )
        for ref in local:
            cluster.load_image(ref, deadline.left())  # a no-op for what preload baked in
        deployer = self._deployer = KubeRayDeployer(
            kube,
            run_id=spec.run_id,
            namespace=namespace,
            name=run_name(spec.run_id, "ray", limit=40),  # KubeRay adds suffixes to pod names
            image=image,
            size=source.ray_size(spec, workers),
            operator=operator,
            workdir=spec.workdir,
            progress=spec.progress,
            pod_defaults=self.rules.pod_defaults(spec),
            **self.rules.deployer_settings(spec),
        )
        self.rules.before_deploy(spec, deployer, deadline.left())
        deployer.deploy(version, deadline, spec.timeouts.node_join)
        self._ingress = source.deploy_ingress(spec, cluster, deployer, version, deadline.left())
        t0 = time.monotonic()
        head = deployer.pods()[0]["metadata"]["name"]
        py = deployer.exec(
            head,
            [
                "python",
                "-c",
                "import sys, ray; print(ray.__version__, '%d.%d' % sys.version_info[:2])",
            ],
            60,
        )
        ray_version, python_version = py.split()[-2:]
        spec.progress(
            f"head runs Ray {ray_version}, Python {python_version} (read in {time.monotonic() - t0:.1f} s)"
        )
        ns = deployer.namespace
        # Absolute: the printed commands must run as printed in a clean shell.
        kubectl_path = shutil.which(kube.kubectl_path) or kube.kubectl_path
        kubectl = shlex.join([kubectl_path, "--kubeconfig", str(kube.kubeconfig)])
        remove = [f"{kubectl} delete raycluster -n {ns} {deployer.name}"]
        remove.append(
            f"{kubectl} delete clusterrole,clusterrolebinding,crd -l {RUN_ID_LABEL}={spec.run_id}"
        )
        remove.append(f"{kubectl} delete namespace {ns}")
        if cmd := cluster.remove_command():
            remove = [cmd]  # the whole cluster is the run's
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=1 + workers,
            ray_version=ray_version,
            python_version=python_version,
            head_address=f"{deployer.head_dns()}:{GCS_PORT}",
            access={
                "kubeconfig": str(kube.kubeconfig),
                "pods": f"{kubectl} get pods -n {ns}",
                "dashboard": f"{kubectl} port-forward -n {ns} service/{deployer.head_service} 8265",
                "client": f"{kubectl} port-forward -n {ns} service/{deployer.head_service} {CLIENT_PORT}",
                **(ingress.as_mapping(self._ingress) if self._ingress else {}),
                "remove": " && ".join(remove),
            },
        )

    def port_forward(self, remote_port: int) -> contextlib.AbstractContextManager[Endpoint]:
        timeout = self._spec.timeouts.preflight if self._spec else 30.0
        return self._require().port_forward(remote_port, timeout)

    def run_in_cluster(self, script: str, timeout: float) -> str:
        return self._require().run_job(script, timeout)

    def inventory(self) -> list[InventoryItem]:
        items: list[InventoryItem] = []
        if self._deployer is not None:
            items += self._deployer.left_behind
            if self._cluster_alive():
                items += self._deployer.inventory()
                seen = {i.name for i in items}  # a grant may carry the run's label too
                items += [i for i in self.rules.inventory(self._deployer) if i.name not in seen]
        if self._cluster is not None:
            items += self._cluster.inventory()
        if self._spec is not None:
            private = runstate.private_path(self._spec.run_id, self._spec.mode)
            if private.exists():
                items.append(
                    InventoryItem(
                        "directory", str(private), self._spec.run_id, "the cluster's kubeconfig"
                    )
                )
        return items

    def collect_diagnostics(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        if self._deployer is not None:
            with contextlib.suppress(Exception):
                self._deployer.collect_diagnostics(dest / "namespace")
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.export_logs(dest / "cluster")

    def teardown(self) -> None:
        spec = self._spec
        if spec is None:
            return
        teardown = Deadline.after(spec.timeouts.teardown, "teardown")
        # Each step runs whatever the one before raised: an unreachable API must not keep the
        # run's own kind cluster alive.
        try:
            if self._deployer is not None:
                problems = self.rules.before_teardown(self._deployer)
                if problems:  # the inventory still lists what was not undone
                    spec.progress("teardown: " + "; ".join(problems))
                # Even on a cluster about to be deleted: what the operator leaves behind when
                # its RayCluster goes (the book warns of Services) is what this check is for.
                goes = self._cluster is not None and self._cluster.owned
                ray = teardown.part("the RayCluster", spec.timeouts.teardown * RAYCLUSTER_SHARE)
                self._deployer.teardown(ray.left(), cluster_goes=goes)
        finally:
            try:
                if self._cluster is not None:
                    self._cluster.destroy(teardown.left())
            finally:
                if self._kube is not None:
                    self._kube.close()
                runstate.remove_private_dir(spec.run_id, spec.mode)
                if self._held:
                    self._held = False
                    runstate.release(spec.run_id)

    # -- SupportsAutoscaling, SupportsPendingNodes ----------------------------------------

    def autoscaling_limits(self) -> AutoscalingLimits | None:
        """KubeRay's in-tree autoscaler on the RayCluster's ``autoscale`` group, if it has one."""
        deployer, spec = self._deployer, self._spec
        if deployer is None or spec is None or not deployer.size.autoscale_max:
            return None
        size = deployer.size
        return AutoscalingLimits(
            min_workers=0,
            max_workers=size.autoscale_max,
            cpus_per_worker=float(size.autoscale_cpus),
            head_cpus=float(size.cpu),
            idle_timeout_s=float(size.idle_timeout_s),
            # A pod scheduled, its image already on the node, Ray started: a node's join.
            scale_up_timeout_s=spec.timeouts.node_join,
            scale_down_timeout_s=size.idle_timeout_s + spec.timeouts.node_join,
        )

    def pending_nodes(self) -> list[str]:
        return self._require().pending_pods()

    # -- SupportsOperatorUpgrade --------------------------------------------------------

    def operator_upgrade(self) -> OperatorUpgrade | None:
        deployer, new = self._deployer, self._upgrade_to
        if deployer is None or deployer.operator is None or new is None:
            return None
        return OperatorUpgrade("KubeRay", deployer.operator.version, new.version)

    def upgrade_operator(self, timeout: float) -> str:
        if self._upgrade_to is None:
            raise RuntimeError("no operator upgrade was asked for (--ray-operator-upgrade-from)")
        return self._require().upgrade_operator(self._upgrade_to, self._kube_version, timeout)

    def reconcile_probe(self, timeout: float) -> str:
        return self._require().reconcile_probe(timeout)

    # -- SupportsIngress ----------------------------------------------------------------

    def ingress_route(self) -> IngressRoute | None:
        return self._ingress

    # -- SupportsNodeExec ---------------------------------------------------------------

    def node_names(self) -> list[str]:
        return [p["metadata"]["name"] for p in self._require().pods()]

    def node_exec(self, node: str, argv: list[str], timeout: float) -> str:
        return self._require().exec(node, argv, timeout)

    # -- SupportsKillNode ---------------------------------------------------------------

    def kill_worker(self) -> str:
        """Delete a worker pod with no grace period; the operator should bring a new one."""
        pods = self._require().pods()
        workers = [
            p
            for p in pods
            if (p["metadata"].get("labels") or {}).get("ray.io/node-type") == "worker"
        ]
        if not workers:
            raise RuntimeError("no worker pod to delete")
        pod = workers[-1]
        self._require().delete_pod(pod["metadata"]["name"])
        return str((pod.get("status") or {}).get("podIP", ""))

    def replaces_lost_nodes(self) -> bool:
        return True

    # -- SupportsKillHead ---------------------------------------------------------------

    def kill_head(self) -> str:
        """Delete the head pod with no grace period; the operator should start a new head."""
        pods = self._require().pods()
        head = next(
            (
                p
                for p in pods
                if (p["metadata"].get("labels") or {}).get("ray.io/node-type") == "head"
            ),
            None,
        )
        if head is None:
            raise RuntimeError("no head pod to delete")
        self._require().delete_pod(head["metadata"]["name"])
        return str((head.get("status") or {}).get("podIP", ""))

    def recovers_head(self) -> bool:
        return True

    # -- helpers ------------------------------------------------------------------------

    def _require(self) -> KubeRayDeployer:
        if self._deployer is None:
            raise RuntimeError("not provisioned")
        return self._deployer

    def _cluster_alive(self) -> bool:
        """False once the run's own cluster is deleted (nothing left to ask)."""
        cluster = self._cluster
        return cluster is not None and (not cluster.owned or bool(cluster.inventory()))
