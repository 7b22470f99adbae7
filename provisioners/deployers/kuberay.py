"""How Ray is deployed on a Kubernetes cluster by its operator, today KubeRay.

The deployer is separate from where the cluster comes from (``clusters.py``): it gets a
:class:`~provisioners.kube.api.Kube` and a namespace of the run, installs the operator (its
CRDs, RBAC and Deployment, read from the release manifests of the operator's Go module), renders
one RayCluster, validates every object offline, applies them, waits until the operator, the
head and every worker are Ready, and removes all of it again, waiting until it is gone.

Everything it creates carries the run label; cluster-scoped objects get names of the run (two
runs on one cluster never share a ClusterRole), and the operator watches only the run's
namespace, so a cluster's own KubeRay (if any) and ours never reconcile each other's objects.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from provisioners.contract.base import (
    CLIENT_PORT,
    DASHBOARD_PORT,
    RUN_ID_LABEL,
    Deadline,
    Endpoint,
    InventoryItem,
    ProvisionError,
    listing,
)
from provisioners.kube import validate
from provisioners.kube.api import Kube, one_line, pod_ready, pod_state, ref
from provisioners.util.relay import free_port
from provisioners.util.runner import Background, CommandError, CommandTimeout
from provisioners.util.waits import WaitTimeout, port_accepts, wait_for

GCS_PORT = 6379
#: The worker group KubeRay's in-tree autoscaler scales (``RaySize.autoscale_max``).
AUTOSCALE_GROUP = "autoscale"
RAYCLUSTER_CRD = "rayclusters.ray.io"
#: Built-in kinds a run may leave in a namespace, listed by the inventory.
NAMESPACED_KINDS = (
    ("v1", "Pod"),
    ("v1", "Service"),
    ("v1", "Endpoints"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("networking.k8s.io/v1", "Ingress"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("ray.io/v1", "RayCluster"),
)
CLUSTER_KINDS = (
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("v1", "Namespace"),
)
#: What Kubernetes itself puts in every namespace: not the run's.
_NAMESPACE_DEFAULTS = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}


@dataclass(frozen=True)
class RaySize:
    """The RayCluster's shape: workers, and per-pod CPU/memory and shared memory."""

    workers: int
    cpu: str = "1"
    memory: str = "2Gi"
    shm: str = "512Mi"
    object_store_bytes: int = 200_000_000  # fits in ``shm`` with room for Ray's own files
    #: A second worker group for KubeRay's in-tree autoscaler: 0 up to ``autoscale_max`` pods
    #: of ``autoscale_cpus`` Ray CPUs each (more than any fixed node has, so work asking for
    #: that many can only run on workers the autoscaler adds). 0: no autoscaler.
    autoscale_max: int = 0
    autoscale_cpus: int = 2
    idle_timeout_s: int = 12


@dataclass(frozen=True)
class OperatorSource:
    """Where the operator comes from: its manifests dir (``ray-operator/config``) and image."""

    version: str
    manifests: Path
    image: str


def read_kustomize_resources(base: Path) -> list[dict[str, Any]]:
    """The objects a kustomize base lists under ``resources`` (recursively into sub-bases).

    Only ``resources`` is followed: namespace, names and images are set by the deployer itself
    (the run's, not the module's defaults), so no kustomize binary is needed.
    """
    kfile = base / "kustomization.yaml"
    if not kfile.is_file():
        raise ProvisionError(f"KubeRay manifests: {kfile} not found")
    spec = yaml.load(kfile.read_text(), Loader=_LOADER) or {}
    out: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (base / entry).resolve()
        if path.is_dir():
            out += read_kustomize_resources(path)
        else:
            out += [d for d in yaml.load_all(path.read_text(), Loader=_LOADER) if d]
    return out


#: libyaml's loader where PyYAML has it: the CRDs are megabytes of YAML, which the pure-Python
#: loader took seconds (tens on a busy 2-core machine) to read, twice per provision.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class KubeRayDeployer:
    """KubeRay and one RayCluster in one namespace of one cluster, for one run."""

    def __init__(
        self,
        kube: Kube,
        *,
        run_id: str,
        namespace: str,
        name: str,
        image: str,
        size: RaySize,
        operator: OperatorSource | None,
        workdir: Path,
        progress: Callable[[str], None],
        pod_defaults: Mapping[str, Any] | None = None,
        namespace_labels: Mapping[str, str] | None = None,
        operator_service_account: str | None = None,
        ray_service_account: str | None = None,
    ) -> None:
        self.kube = kube
        self.run_id = run_id
        self.namespace = namespace
        self.name = name
        self.image = image
        self.size = size
        self.operator = operator  # None: the cluster's own operator serves RayClusters
        self.workdir = workdir
        self.progress = progress
        #: Extra pod-level settings every pod of the run gets (securityContext on OpenShift).
        self.pod_defaults = dict(pod_defaults or {})
        #: Labels of the run's namespace beyond the run label (Pod Security Admission's).
        self.namespace_labels = dict(namespace_labels or {})
        #: Service accounts by role (None: the manifests' for the operator, the default for Ray).
        self.operator_service_account = operator_service_account
        self.ray_service_account = ray_service_account
        self.background = Background(run_id, workdir / "forwards")
        self._applied: list[dict[str, Any]] = []  # in apply order; deleted in reverse
        self._created_namespace = False
        self._operator_objects: list[dict[str, Any]] | None = None  # rendered once
        self._job_seq = 0
        #: Objects of the RayCluster still there after it was deleted (the operator's leak).
        self.left_behind: list[InventoryItem] = []

    # -- naming -------------------------------------------------------------------------

    @property
    def head_service(self) -> str:
        """KubeRay names the head Service ``<raycluster>-head-svc``."""
        return f"{self.name}-head-svc"

    def head_dns(self) -> str:
        return f"{self.head_service}.{self.namespace}.svc.cluster.local"

    def labels(self) -> dict[str, str]:
        return {RUN_ID_LABEL: self.run_id}

    # -- rendering ----------------------------------------------------------------------

    def namespace_object(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.namespace,
                "labels": {**self.namespace_labels, **self.labels()},
            },
        }

    def operator_objects(self) -> list[dict[str, Any]]:
        """The operator's CRDs, RBAC and Deployment from its module, made the run's own."""
        if self.operator is None:
            return []
        if self._operator_objects is None:
            self._operator_objects = self._render_operator()
        return copy.deepcopy(self._operator_objects)

    def switch_operator(self, new: OperatorSource) -> list[dict[str, Any]]:
        """Make ``new`` the run's operator; its objects, rendered afresh (never the old ones)."""
        self.operator, self._operator_objects = new, None
        return self.operator_objects()

    def _render_operator(self) -> list[dict[str, Any]]:
        assert self.operator is not None
        objs = read_kustomize_resources(self.operator.manifests / "default")
        sa_name = next(o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount")
        own_sa = self.operator_service_account or sa_name
        renamed = {}
        for o in objs:
            if o["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                new = f"{self.namespace}-{o['metadata']['name']}"[:253]
                renamed[(o["kind"], o["metadata"]["name"])] = new
        out = []
        for src in objs:
            o = copy.deepcopy(src)
            meta = o.setdefault("metadata", {})
            meta.setdefault("labels", {}).update(self.labels())
            kind = o["kind"]
            if kind in ("ClusterRole", "ClusterRoleBinding"):
                meta["name"] = renamed[(kind, meta["name"])]
            elif kind != "CustomResourceDefinition":
                meta["namespace"] = self.namespace
            if kind == "ServiceAccount" and meta["name"] == sa_name:
                meta["name"] = own_sa
            if kind in ("ClusterRoleBinding", "RoleBinding"):
                role = o["roleRef"]
                if role["kind"] == "ClusterRole":
                    role["name"] = renamed.get(("ClusterRole", role["name"]), role["name"])
                for subject in o.get("subjects", []):
                    if subject.get("kind") == "ServiceAccount":
                        subject["namespace"] = self.namespace
                        if subject.get("name") == sa_name:
                            subject["name"] = own_sa
            if kind == "Deployment":
                pod = o["spec"]["template"]["spec"]
                pod["serviceAccountName"] = own_sa
                for c in pod["containers"]:
                    c["image"] = self.operator.image
                    c["imagePullPolicy"] = "IfNotPresent"
                    # Reconcile only the run's namespace: another KubeRay on the cluster keeps
                    # its own, and ours never touches theirs.
                    c["args"] = [
                        *(a for a in c.get("args", []) if not a.startswith("--watch-namespace")),
                        f"--watch-namespace={self.namespace}",
                    ]
                self._apply_pod_defaults(pod)
            out.append(o)
        # CRDs first (the rest may refer to them), then RBAC, then the Deployment.
        order = {"CustomResourceDefinition": 0, "Deployment": 2}
        return sorted(out, key=lambda o: order.get(o["kind"], 1))

    def raycluster(self) -> dict[str, Any]:
        """The RayCluster of the run: head + ``size.workers`` workers of the node image."""
        size = self.size

        def group(kind: str) -> dict[str, Any]:
            container: dict[str, Any] = {
                "name": f"ray-{kind}",
                "image": self.image,
                "imagePullPolicy": "IfNotPresent",
                "env": [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}],
                "resources": {
                    "limits": {"cpu": size.cpu, "memory": size.memory},
                    # Small requests: three pods must schedule on a 2-core node.
                    "requests": {"cpu": "100m", "memory": "512Mi"},
                },
                "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
            }
            if kind == "head":
                container["ports"] = [
                    {"name": "gcs", "containerPort": GCS_PORT},
                    {"name": "dashboard", "containerPort": DASHBOARD_PORT},
                    {"name": "client", "containerPort": CLIENT_PORT},
                ]
            pod: dict[str, Any] = {
                "containers": [container],
                "volumes": [
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": size.shm}}
                ],
            }
            self._ray_pod(pod)
            return {
                "rayStartParams": {"object-store-memory": str(size.object_store_bytes)},
                "template": {"metadata": {"labels": self.labels()}, "spec": pod},
            }

        head = group("head")
        head["rayStartParams"]["dashboard-host"] = "0.0.0.0"
        worker = group("worker")
        worker.update(
            groupName="workers",
            replicas=size.workers,
            minReplicas=size.workers,
            maxReplicas=max(size.workers, 1),
        )
        spec: dict[str, Any] = {
            "rayVersion": self.ray_version(),
            "headGroupSpec": head,
            "workerGroupSpecs": [worker] if size.workers else [],
        }
        if size.autoscale_max:
            scaled = group("worker")
            scaled["rayStartParams"]["num-cpus"] = str(size.autoscale_cpus)
            scaled.update(
                groupName=AUTOSCALE_GROUP, replicas=0, minReplicas=0, maxReplicas=size.autoscale_max
            )
            spec["workerGroupSpecs"].append(scaled)
            spec["enableInTreeAutoscaling"] = True
            spec["autoscalerOptions"] = {
                "idleTimeoutSeconds": size.idle_timeout_s,
                "imagePullPolicy": "IfNotPresent",  # the head's image, loaded, never pulled
                # KubeRay's default asks 500m: more than a 2-core kind node has left.
                "resources": {
                    "limits": {"cpu": "500m", "memory": "512Mi"},
                    "requests": {"cpu": "100m", "memory": "256Mi"},
                },
            }
        return {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels()},
            "spec": spec,
        }

    def ray_version(self) -> str:
        import importlib.metadata

        return importlib.metadata.version("ray")

    def _ray_pod(self, pod: dict[str, Any]) -> None:
        """Settings of a pod running Ray (head, worker, the Job's driver)."""
        # The pod's pause container as PID 1 reaps exited processes: Ray (PID 1 otherwise) does
        # not, and the head's Ray Client proxier fails new sessions on a zombie's cmdline()
        # (psutil.ZombieProcess in start_specific_server, seen after a few sessions here).
        pod["shareProcessNamespace"] = True
        if self.ray_service_account:
            pod["serviceAccountName"] = self.ray_service_account
        self._apply_pod_defaults(pod)

    def _apply_pod_defaults(self, pod: dict[str, Any]) -> None:
        for key, value in self.pod_defaults.items():
            if key == "containerSecurityContext":
                for c in pod.get("containers", []):
                    c.setdefault("securityContext", {}).update(copy.deepcopy(value))
            elif key == "containerEnv":  # appended, so a mode's value wins over the image's
                for c in pod.get("containers", []):
                    c.setdefault("env", []).extend(copy.deepcopy(value))
            else:
                pod[key] = copy.deepcopy(value)

    def job(self, script: str, timeout: float) -> list[dict[str, Any]]:
        """A ConfigMap with ``script`` and a Job that runs it against the head Service."""
        self._job_seq += 1
        name = f"{self.name}-job-{self._job_seq}"[:63].rstrip("-")
        container: dict[str, Any] = {
            "name": "script",
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "/rc/script.py"],
            # The book's jobexample: a driver in its own pod reaches the head Service by DNS,
            # through the Ray Client port (a driver needs a raylet beside it for the GCS port).
            "env": [
                {"name": "RAY_ADDRESS", "value": f"ray://{self.head_dns()}:{CLIENT_PORT}"},
                {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
            ],
            "volumeMounts": [{"name": "script", "mountPath": "/rc"}],
            "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}},
        }
        pod: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": "script", "configMap": {"name": name}}],
        }
        self._ray_pod(pod)
        meta = {"name": name, "namespace": self.namespace, "labels": self.labels()}
        return [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta,
                "data": {"script.py": script},
            },
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": meta,
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": max(1, int(timeout)),
                    "template": {"metadata": {"labels": self.labels()}, "spec": pod},
                },
            },
        ]

    # -- validation ---------------------------------------------------------------------

    def raycluster_crd(self) -> dict[str, Any]:
        """The RayCluster CRD the cluster serves, else the one in the operator's manifests."""
        served = self.kube.get(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", RAYCLUSTER_CRD
        )
        if served:
            return dict(served)
        for o in self.operator_objects():
            if o["kind"] == "CustomResourceDefinition" and o["metadata"]["name"] == RAYCLUSTER_CRD:
                return o
        raise ProvisionError(
            f"{self.kube.where()} serves no {RAYCLUSTER_CRD} and no operator is installed by "
            "this run (--ray-operator-install none needs a KubeRay already on the cluster)"
        )

    def validate(self, objs: list[dict[str, Any]], kube_version: str) -> None:
        crds = {"RayCluster": self.raycluster_crd()}
        validate.validate_all(objs, crds=crds, kube_version=kube_version)

    # -- lifecycle ----------------------------------------------------------------------

    def deploy(self, kube_version: str, deadline: Deadline, node_timeout: float) -> None:
        """Namespace, operator, RayCluster: validated, applied, and Ready within the bounds."""
        t0 = time.monotonic()
        operator = self.operator_objects()
        rc = self.raycluster()
        self.validate([self.namespace_object(), *operator, rc], kube_version)
        self._check_crd_owner(operator)
        (self.workdir / "raycluster.yaml").write_text(yaml.safe_dump(rc, sort_keys=False))
        self.progress(
            f"{1 + len(operator) + 1} manifests validated in {time.monotonic() - t0:.1f} s"
        )

        self.ensure_namespace()
        t_rc = time.monotonic()
        if operator:
            t0 = time.monotonic()
            for o in operator:
                self._apply(o)
            self._wait_crd_established(deadline.left(60))
            # The RayCluster goes in as soon as its CRD is served: the operator reconciles it
            # the moment it starts, so its own start (probes, a 100m CPU limit) is not waited
            # out first. A dead operator is still named first.
            t_rc = time.monotonic()
            self._apply(rc)
            self._wait_operator(deadline.left(node_timeout))
            self.progress(
                f"KubeRay {self.operator and self.operator.version} ready in {time.monotonic() - t0:.1f} s"
            )
        else:
            self._apply(rc)
        t0 = t_rc
        self.wait_raycluster(deadline.left(node_timeout))
        self.progress(
            f"RayCluster {self.name} ready in {time.monotonic() - t0:.1f} s "
            f"(head + {self.size.workers} worker(s))"
        )

    def ensure_namespace(self) -> None:
        """Create the run's namespace unless it exists (then it is not the run's to delete)."""
        if self._created_namespace:
            return
        if self.kube.get("v1", "Namespace", self.namespace) is None:
            self._apply(self.namespace_object())
            self._created_namespace = True

    def apply(self, obj: dict[str, Any]) -> None:
        """Apply an object a mode adds to the run; teardown deletes it (in reverse order)."""
        self._apply(obj)

    def _check_crd_owner(self, operator: list[dict[str, Any]]) -> None:
        """Refuse to replace CRDs someone else installed (their KubeRay would break)."""
        for o in operator:
            if o["kind"] != "CustomResourceDefinition":
                continue
            served = self.kube.get(o["apiVersion"], o["kind"], o["metadata"]["name"])
            if served and (served["metadata"].get("labels") or {}).get(RUN_ID_LABEL) != self.run_id:
                raise ProvisionError(
                    f"{self.kube.where()} already serves {o['metadata']['name']} (installed "
                    "outside this run): use --ray-operator-install none to test with the "
                    "cluster's own KubeRay"
                )

    def _apply(self, obj: dict[str, Any]) -> None:
        self.kube.apply(obj)
        self._applied.append(obj)

    def _wait_crd_established(self, timeout: float) -> None:
        def established() -> bool:
            crd = self.kube.get(
                "apiextensions.k8s.io/v1", "CustomResourceDefinition", RAYCLUSTER_CRD
            )
            conds = ((crd or {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        self._wait(established, timeout, f"CRD {RAYCLUSTER_CRD} to be established", lambda: "")

    def _wait_operator(self, timeout: float) -> None:
        deployment = next(o for o in self._applied if o["kind"] == "Deployment")
        name = deployment["metadata"]["name"]
        selector = ",".join(
            f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
        )

        def available() -> bool:
            d = self.kube.get("apps/v1", "Deployment", name, self.namespace) or {}
            return int((d.get("status") or {}).get("availableReplicas") or 0) >= 1

        def seen() -> str:
            pods = self.kube.pods(self.namespace, selector)
            return (
                f"deployment {self.namespace}/{name}: "
                + ("; ".join(pod_state(p) for p in pods) or "no pods")
                + "; last events: "
                + (" | ".join(self.kube.events(self.namespace)) or "none")
            )

        self._wait(
            available, timeout, f"the KubeRay operator (deployment {name}) to be available", seen
        )

    def wait_raycluster(self, timeout: float) -> None:
        """Head and every worker Running and Ready, and the RayCluster's state ``ready``."""
        selector = f"ray.io/cluster={self.name}"
        want = 1 + self.size.workers

        def ready() -> bool:
            rc = self.kube.get("ray.io/v1", "RayCluster", self.name, self.namespace) or {}
            pods = self.kube.pods(self.namespace, selector)
            return (rc.get("status") or {}).get("state") == "ready" and sum(
                pod_ready(p) for p in pods
            ) >= want

        def seen() -> str:
            rc = self.kube.get("ray.io/v1", "RayCluster", self.name, self.namespace) or {}
            pods = self.kube.pods(self.namespace, selector)
            waiting = [p for p in pods if not pod_ready(p)]
            events = []
            for p in waiting[:3]:
                events += self.kube.events(self.namespace, p["metadata"]["name"], limit=2)
            return (
                f"RayCluster state {(rc.get('status') or {}).get('state')!r}, "
                f"{len(pods) - len(waiting)}/{want} pod(s) ready; "
                + ("; ".join(pod_state(p) for p in waiting) or "no pods yet")
                + ("; last events: " + " | ".join(events) if events else "")
            )

        self._wait(ready, timeout, f"RayCluster {self.namespace}/{self.name} to be ready", seen)

    def _wait(
        self, probe: Callable[[], bool], timeout: float, what: str, seen: Callable[[], str]
    ) -> None:
        try:
            wait_for(probe, timeout=timeout, what=what, interval=1.0, last_seen=seen)
        except WaitTimeout as exc:
            raise ProvisionError(str(exc)) from None

    # -- using the cluster ------------------------------------------------------------

    def pods(self) -> list[dict[str, Any]]:
        """The RayCluster's pods, head first."""
        pods = self.kube.pods(self.namespace, f"ray.io/cluster={self.name}")
        return sorted(
            pods,
            key=lambda p: (
                (p["metadata"].get("labels") or {}).get("ray.io/node-type") != "head",
                p["metadata"]["name"],
            ),
        )

    def port_forward(
        self, remote_port: int, timeout: float
    ) -> contextlib.AbstractContextManager[Endpoint]:
        return self._forward(remote_port, timeout)

    @contextlib.contextmanager
    def _forward(self, remote_port: int, timeout: float) -> Iterator[Endpoint]:
        port = free_port()
        argv = self.kube.kubectl_argv(
            "port-forward",
            "-n",
            self.namespace,
            "--address",
            "127.0.0.1",
            f"service/{self.head_service}",
            f"{port}:{remote_port}",
        )
        with self.background.start(
            argv,
            f"kubectl port-forward {remote_port}",
            ready=lambda: port_accepts("127.0.0.1", port),
            timeout=timeout,
        ):
            yield Endpoint("127.0.0.1", port)

    def run_job(self, script: str, timeout: float) -> str:
        """Run ``script`` as a Job; return its log, or raise RuntimeError with it on failure."""
        objs = self.job(script, timeout)
        job = objs[-1]
        name = job["metadata"]["name"]
        for o in objs:
            self.kube.apply(o)

        def finished() -> str | None:
            status = (self.kube.get("batch/v1", "Job", name, self.namespace) or {}).get(
                "status"
            ) or {}
            if status.get("succeeded"):
                return "succeeded"
            if status.get("failed"):
                return "failed"
            return None

        try:
            outcome = wait_for(
                finished,
                timeout=timeout + 30,
                what=f"Job {self.namespace}/{name}",
                interval=1.0,
                last_seen=lambda: "; ".join(
                    pod_state(p) for p in self.kube.pods(self.namespace, f"job-name={name}")
                ),
            )
            logs = self._job_logs(name)
        except WaitTimeout as exc:
            outcome, logs = "timed out", f"{exc}\n{self._job_logs(name)}"
        finally:
            for o in reversed(objs):
                self.kube.delete(o)
        if outcome != "succeeded":
            raise RuntimeError(f"Job {self.namespace}/{name} {outcome}; its log:\n{logs}")
        return logs

    def _job_logs(self, job: str) -> str:
        pods = self.kube.pods(self.namespace, f"job-name={job}")
        out = []
        for p in pods:
            try:
                out.append(
                    self.kube.core().read_namespaced_pod_log(p["metadata"]["name"], self.namespace)
                )
            except Exception as exc:  # a pod that never started has no log: say so
                out.append(
                    f"(no log from {p['metadata']['name']}: {one_line(exc)}; {pod_state(p)})"
                )
        return "\n".join(out)

    def exec(self, pod: str, argv: list[str], timeout: float) -> str:
        try:
            return self.kube.kubectl(
                ["exec", "-n", self.namespace, pod, "--", *argv], timeout, what=f"exec in {pod}"
            )
        except (CommandError, CommandTimeout) as exc:
            raise RuntimeError(str(exc)) from None

    def pending_pods(self) -> list[str]:
        """The RayCluster's pods not yet running (Pending), each with its state."""
        return [
            pod_state(p) for p in self.pods() if (p.get("status") or {}).get("phase") == "Pending"
        ]

    def upgrade_operator(self, new: OperatorSource, kube_version: str, timeout: float) -> str:
        """Apply ``new``'s CRDs, RBAC and Deployment over the running operator; wait until the
        Deployment has rolled out and every operator pod runs ``new``'s image."""
        if self.operator is None:
            raise RuntimeError("no operator of this run to upgrade (--ray-operator-install none)")
        deadline = Deadline.after(timeout, "the operator upgrade")
        old = self.operator
        objs = self.switch_operator(new)
        validate.validate_all(objs, crds={}, kube_version=kube_version)
        self._check_crd_owner(objs)
        for o in objs:
            self._apply(o)
        self._wait_crd_established(deadline.left(60))
        deployment = next(o for o in objs if o["kind"] == "Deployment")
        name = deployment["metadata"]["name"]
        selector = ",".join(
            f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
        )

        def images() -> list[tuple[str, str, bool]]:
            return [
                (p["metadata"]["name"], c.get("image", ""), pod_ready(p))
                for p in self.kube.pods(self.namespace, selector)
                for c in p["spec"]["containers"]
            ]

        def rolled_out() -> bool:
            d = self.kube.get("apps/v1", "Deployment", name, self.namespace) or {}
            status = d.get("status") or {}
            current = int(status.get("observedGeneration") or 0) >= int(
                (d.get("metadata") or {}).get("generation") or 0
            )
            pods = images()
            return current and bool(pods) and all(i == new.image and ok for _, i, ok in pods)

        try:
            wait_for(
                rolled_out,
                timeout=deadline.left(timeout),
                what=f"KubeRay {old.version} -> {new.version}: deployment {self.namespace}/{name} "
                f"to run only {new.image}",
                interval=1.0,
                last_seen=lambda: (
                    "; ".join(f"{n} {i} ready={ok}" for n, i, ok in images()) or "no operator pods"
                ),
            )
        except WaitTimeout as exc:
            raise RuntimeError(str(exc)) from None
        pods = ", ".join(n for n, _, _ in images())
        return f"KubeRay {new.version} ({new.image}) runs as {pods}"

    def reconcile_probe(self, timeout: float) -> str:
        """Delete the head Service the operator made; it must make it again (a new uid)."""
        gone = self.kube.get("v1", "Service", self.head_service, self.namespace)
        if gone is None:
            raise RuntimeError(f"Service {self.namespace}/{self.head_service} is not there")
        old_uid = str(gone["metadata"]["uid"])
        t0 = time.monotonic()
        self.kube.delete(gone, foreground=False)
        seen = ["not yet made again"]

        def back() -> bool:
            svc = self.kube.get("v1", "Service", self.head_service, self.namespace)
            if svc is None:
                return False
            uid = str(svc["metadata"]["uid"])
            seen[0] = f"uid {uid}" + (" (the one deleted: not gone yet)" if uid == old_uid else "")
            return uid != old_uid

        try:
            wait_for(
                back,
                timeout=timeout,
                what=f"the operator to make Service {self.namespace}/{self.head_service} again "
                "after it was deleted",
                interval=1.0,
                last_seen=lambda: (
                    seen[0]
                    + "; operator: "
                    + "; ".join(
                        pod_state(p)
                        for p in self.kube.pods(
                            self.namespace, "app.kubernetes.io/name=kuberay-operator"
                        )
                    )
                ),
            )
        except WaitTimeout as exc:
            raise RuntimeError(str(exc)) from None
        return (
            f"Service {self.namespace}/{self.head_service} deleted and made again by the operator "
            f"in {time.monotonic() - t0:.1f} s"
        )

    def delete_pod(self, pod: str) -> None:
        """Delete a pod at once (grace period 0): a node lost, not drained."""
        self.kube.core().delete_namespaced_pod(pod, self.namespace, grace_period_seconds=0)

    # -- teardown, inventory, diagnostics ---------------------------------------------

    def teardown(self, timeout: float, *, cluster_goes: bool = False) -> None:
        """RayCluster (and its pods) first, then what the run installed, then the namespace.

        ``cluster_goes``: the whole cluster is deleted next (the run's kind cluster), so only
        the RayCluster is removed one by one — what its operator leaves behind is the check —
        and the rest goes with the cluster instead of waiting out each deletion.
        """
        self.background.close()
        deadline = Deadline.after(timeout, "the RayCluster's teardown")
        rc = [o for o in self._applied if o["kind"] == "RayCluster"] or [self.raycluster()]
        steps: list[Sequence[Mapping[str, Any]]] = [
            rc,
            [o for o in reversed(self._applied) if o["kind"] not in ("RayCluster", "Namespace")],
        ]
        if self._created_namespace:
            steps.append([self.namespace_object()])
        problems: list[str] = []
        try:
            self._delete_raycluster(rc, deadline, problems)
        except Exception as exc:  # go on: what the run installed must still be removed
            problems.append(f"delete RayCluster {self.name}: {one_line(exc)}")
        for objs in [] if cluster_goes else steps[1:]:
            for o in objs:
                try:
                    self.kube.delete(o)
                except Exception as exc:  # go on: the rest must still be removed
                    problems.append(f"delete {ref(o)}: {one_line(exc)}")
            try:
                self.kube.wait_gone(objs, deadline.left(timeout))
            except WaitTimeout as exc:
                problems.append(str(exc))
        self._applied.clear()
        if problems:
            self.progress("teardown: " + "; ".join(problems))

    def _delete_raycluster(
        self, rc: Sequence[Mapping[str, Any]], deadline: Deadline, problems: list[str]
    ) -> None:
        """Delete the RayCluster; what it owned must then go too, or it is a leak."""
        for o in rc:
            self.kube.delete(o)
        try:
            self.kube.wait_gone(rc, deadline.left(120))
        except WaitTimeout as exc:
            problems.append(str(exc))
        selector = f"ray.io/cluster={self.name}"

        def owned() -> list[dict[str, Any]]:
            return [
                o
                for api_version, kind in (("v1", "Pod"), ("v1", "Service"))
                for o in self.kube.list_objects(
                    api_version, kind, namespace=self.namespace, selector=selector
                )
            ]

        left: list[list[dict[str, Any]]] = [[]]

        def none_left() -> bool:
            left[0] = owned()
            return not left[0]

        with contextlib.suppress(WaitTimeout):
            wait_for(
                none_left,
                timeout=deadline.left(60),
                what="the RayCluster's pods and Services to go",
                interval=1.0,
            )
        self.left_behind = [
            InventoryItem(
                o["kind"].lower(), ref(o), self.run_id, "left after its RayCluster was deleted"
            )
            for o in left[0]
        ]

    def inventory(self) -> list[InventoryItem]:
        """Everything of the run: by namespace, by run label, and cluster-scoped objects."""
        items: dict[str, InventoryItem] = {}
        selector = f"{RUN_ID_LABEL}={self.run_id}"
        for api_version, kind in NAMESPACED_KINDS:
            with listing(f"{kind} objects of the run"):  # an API error is never "none left"
                in_ns = self.kube.list_objects(api_version, kind, namespace=self.namespace)
                labeled = self.kube.list_objects(api_version, kind, selector=selector)
            for o in [*in_ns, *labeled]:
                if (kind, o["metadata"]["name"]) in _NAMESPACE_DEFAULTS:
                    continue
                key = ref(o)
                items.setdefault(key, InventoryItem(kind.lower(), key, self.run_id))
        for api_version, kind in CLUSTER_KINDS:
            with listing(f"{kind} objects of the run"):
                found = self.kube.list_objects(api_version, kind, selector=selector)
            for o in found:
                key = ref(o)
                items.setdefault(key, InventoryItem(kind.lower(), key, self.run_id))
        return list(items.values()) + self.background.inventory()

    def collect_diagnostics(self, dest: Path) -> None:
        """Pod logs, events and object state of the run's namespace."""
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "events.txt").write_text("\n".join(self.kube.events(self.namespace, limit=200)))
        for pod in self.kube.list_objects("v1", "Pod", namespace=self.namespace):
            name = pod["metadata"]["name"]
            (dest / f"{name}.json").write_text(json.dumps(pod, indent=1, default=str))
            with contextlib.suppress(Exception):
                (dest / f"{name}.log").write_text(
                    self.kube.core().read_namespaced_pod_log(name, self.namespace, tail_lines=2000)
                )
        rc = self.kube.get("ray.io/v1", "RayCluster", self.name, self.namespace)
        if rc:
            (dest / "raycluster.json").write_text(json.dumps(rc, indent=1, default=str))
