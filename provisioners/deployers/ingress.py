"""An ingress to the RayCluster's head, as the book connects: dashboard by host, Ray Client by gRPC.

The book reaches its cluster through an NGINX ingress (``ray.<ip>.nip.io:80``). Here, on kind,
the ingress controller is Traefik v3, built from its Go module (``artifacts.py``) and deployed in
the run's namespace, watching only that namespace (no cluster-scoped objects: no IngressClass,
no ClusterRole). Two ``networking.k8s.io/v1`` Ingresses of the run share one host:

- ``/`` (Prefix) to the head Service's dashboard port;
- ``/ray.rpc.`` to the head's Ray Client port over cleartext HTTP/2 (h2c): every Ray Client RPC
  is ``/ray.rpc.<Service>/<Method>``. Traefik takes the backend scheme from an annotation on
  the Service, and the head Service also carries the dashboard's HTTP/1 port, so the client
  port gets a Service of its own (``<cluster>-client-h2c``) with the head Service's selector.

The host is under ``.test`` (RFC 6761: it never resolves), so no DNS is asked: clients send the
Host header (HTTP/1) or ``:authority`` (gRPC) themselves. On a cluster of a user's own,
``--ray-ingress-host`` names the ingress controller they run; the same Ingresses are made (with
``--ray-ingress-class``) and the checks go through their controller instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from provisioners.contract.base import CLIENT_PORT, DASHBOARD_PORT, IngressRoute, ProvisionError
from provisioners.contract.options import Option
from provisioners.deployers.kuberay import KubeRayDeployer
from provisioners.kube import validate
from provisioners.kube.api import Kube, pod_state
from provisioners.util.waits import WaitTimeout, wait_for

TRAEFIK = "rc-traefik"
#: Traefik's entry point inside its pod (unprivileged: it runs as a non-root user).
WEB_PORT = 8000
#: RFC 6761 reserves ``.test``: the name cannot resolve anywhere, so no DNS is ever asked.
INGRESS_DOMAIN = "rc.test"
#: The path every Ray Client RPC shares (``/ray.rpc.RayletDriver/Init``, ...).
CLIENT_PATH = "/ray.rpc."
DASHBOARD_PATH = "/"

INGRESS_HOST = Option.string(
    "ingress-host",
    "kube-operator: the ingress controller you run, HOST[:PORT] as reached from here; the run "
    "adds Ingresses for its RayCluster and the ingress checks go through it",
)
INGRESS_CLASS = Option.string(
    "ingress-class", "kube-operator: ingressClassName of the run's Ingresses (default: none)"
)


def ingress_host(namespace: str) -> str:
    return f"ray.{namespace}.{INGRESS_DOMAIN}"


def client_service(deployer: KubeRayDeployer) -> str:
    return f"{deployer.name}-client-h2c"


def route_objects(
    deployer: KubeRayDeployer, host: str, ingress_class: str | None = None
) -> list[dict[str, Any]]:
    """The client port's h2c Service and the two Ingresses (dashboard, Ray Client) of the run."""
    ns, labels = deployer.namespace, deployer.labels()
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": client_service(deployer),
            "namespace": ns,
            "labels": labels,
            # Traefik: speak cleartext HTTP/2 to this Service's pods (Ray Client is gRPC).
            "annotations": {"traefik.ingress.kubernetes.io/service.serversscheme": "h2c"},
        },
        "spec": {
            # What KubeRay's head Service selects: the one head pod of the RayCluster.
            "selector": {"ray.io/cluster": deployer.name, "ray.io/node-type": "head"},
            "ports": [{"name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT}],
        },
    }

    def ingress(suffix: str, path: str, path_type: str, backend: str, port: int) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": path,
                                "pathType": path_type,
                                "backend": {"service": {"name": backend, "port": {"number": port}}},
                            }
                        ]
                    },
                }
            ]
        }
        if ingress_class:
            spec["ingressClassName"] = ingress_class
        annotations = {}
        if suffix == "client":  # NGINX's way of saying gRPC (it then wants TLS: see the note)
            annotations["nginx.ingress.kubernetes.io/backend-protocol"] = "GRPC"
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": f"{deployer.name}-{suffix}",
                "namespace": ns,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": spec,
        }

    return [
        service,
        ingress("dashboard", DASHBOARD_PATH, "Prefix", deployer.head_service, DASHBOARD_PORT),
        # ImplementationSpecific: a character-wise prefix in Traefik and NGINX alike ("Prefix"
        # matches whole path elements, and "/ray.rpc." is not one).
        ingress(
            "client", CLIENT_PATH, "ImplementationSpecific", client_service(deployer), CLIENT_PORT
        ),
    ]


def traefik_objects(deployer: KubeRayDeployer, image: str) -> list[dict[str, Any]]:
    """Traefik in the run's namespace: its account, a namespaced Role, the Deployment, a NodePort."""
    ns, labels = deployer.namespace, deployer.labels()
    meta = {"name": TRAEFIK, "namespace": ns, "labels": labels}
    pod_labels = {**labels, "app.kubernetes.io/name": TRAEFIK}
    rules = [
        {
            "apiGroups": [""],
            "resources": ["services", "secrets"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["ingresses"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["ingresses/status"],
            "verbs": ["update"],
        },
    ]
    args = [
        f"--entryPoints.web.address=:{WEB_PORT}",
        # Ray Client's streams live as long as its session: no read deadline on them.
        "--entryPoints.web.transport.respondingTimeouts.readTimeout=0",
        "--providers.kubernetesIngress=true",
        f"--providers.kubernetesIngress.namespaces={ns}",
        # Only the run's namespace: no IngressClass or Node lookups, so no ClusterRole.
        "--providers.kubernetesIngress.disableClusterScopeResources=true",
        "--ping=true",
        "--log.level=INFO",
        # Nothing leaves the cluster: no version check, no usage statistics.
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
    ]
    container: dict[str, Any] = {
        "name": "traefik",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [{"name": "web", "containerPort": WEB_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/ping", "port": 8080},
            "periodSeconds": 1,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TRAEFIK},
            "subjects": [{"kind": "ServiceAccount", "name": TRAEFIK, "namespace": ns}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": TRAEFIK}},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {"serviceAccountName": TRAEFIK, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                # Reached at the kind node's address, on the run's own Docker network.
                "type": "NodePort",
                "selector": {"app.kubernetes.io/name": TRAEFIK},
                "ports": [{"name": "web", "port": 80, "targetPort": WEB_PORT}],
            },
        },
    ]


def deploy_traefik(
    deployer: KubeRayDeployer, image: str, node_address: str, kube_version: str, timeout: float
) -> IngressRoute:
    """Traefik and the run's routes, applied and the controller Ready; where to reach it."""
    t0 = time.monotonic()
    host = ingress_host(deployer.namespace)
    objs = [*traefik_objects(deployer, image), *route_objects(deployer, host)]
    validate.validate_all(objs, crds={}, kube_version=kube_version)
    for obj in objs:
        deployer.apply(obj)
    kube = deployer.kube
    _wait_available(kube, deployer.namespace, timeout)
    service = kube.get("v1", "Service", TRAEFIK, deployer.namespace) or {}
    ports = (service.get("spec") or {}).get("ports") or [{}]
    node_port = ports[0].get("nodePort")
    if not node_port:
        raise ProvisionError(f"Service {deployer.namespace}/{TRAEFIK} got no nodePort: {ports}")
    deployer.progress(
        f"ingress (Traefik) ready in {time.monotonic() - t0:.1f} s at {node_address}:{node_port}, host {host}"
    )
    return IngressRoute(
        address=f"{node_address}:{node_port}",
        host=host,
        dashboard_prefix=DASHBOARD_PATH,
        controller=f"Traefik in {deployer.namespace}",
    )


def user_route(
    deployer: KubeRayDeployer, address: str, ingress_class: str | None, kube_version: str
) -> IngressRoute:
    """The run's Ingresses on a user's cluster, served by the controller they run at ``address``."""
    host = ingress_host(deployer.namespace)
    objs = route_objects(deployer, host, ingress_class)
    validate.validate_all(objs, crds={}, kube_version=kube_version)
    for obj in objs:
        deployer.apply(obj)
    if ":" not in address:
        address += ":80"
    controller = f"the ingress controller at {address}" + (
        f" (class {ingress_class})" if ingress_class else ""
    )
    return IngressRoute(address, host, DASHBOARD_PATH, controller)


def _wait_available(kube: Kube, namespace: str, timeout: float) -> None:
    def available() -> bool:
        d = kube.get("apps/v1", "Deployment", TRAEFIK, namespace) or {}
        return int((d.get("status") or {}).get("availableReplicas") or 0) >= 1

    def seen() -> str:
        pods = kube.pods(namespace, f"app.kubernetes.io/name={TRAEFIK}")
        return "; ".join(pod_state(p) for p in pods) or "no pods"

    try:
        wait_for(
            available,
            timeout=timeout,
            what=f"the ingress controller (deployment {namespace}/{TRAEFIK}) to be available",
            interval=1.0,
            last_seen=seen,
        )
    except WaitTimeout as exc:
        raise ProvisionError(str(exc)) from None


def as_mapping(route: IngressRoute) -> Mapping[str, str]:
    """The route as a handle's ``access`` lines (how a person reaches the head through it)."""
    return {
        "ingress dashboard": f"curl -H 'Host: {route.host}' http://{route.address}{route.dashboard_prefix}api/version",
        "ingress client": f"ray://{route.address} with gRPC authority {route.host}",
    }
