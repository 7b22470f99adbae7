"""OpenShift's restrictions as Kubernetes objects: SCCs, the grants of one, restricted pods.

On OpenShift every pod is admitted under a SecurityContextConstraints (SCC) its service account
may ``use``; ``restricted-v2`` (the default) assigns a UID of the namespace's range, so an image
built to run as user 1000 needs ``anyuid``. ``oc adm policy add-scc-to-user anyuid -z SA``
grants it with a RoleBinding of the SA to the ClusterRole ``system:openshift:scc:anyuid``
(verb ``use`` on ``securitycontextconstraints/anyuid``): :func:`scc_grant` is that binding, for
clusters where ``oc`` is not at hand.

The rehearsal on a vanilla cluster installs what an OpenShift cluster has built in: the SCC
CRD (from the ``github.com/openshift/api`` Go module), the ``anyuid`` and ``restricted-v2``
SCCs (as OpenShift ships them) and their ``use`` roles. Nothing admits pods by SCCs there;
Pod Security Admission's ``restricted`` level on the run's namespace is the real enforcement
(non-root, no privilege escalation, capabilities dropped, a seccomp profile).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from provisioners.contract.base import RUN_ID_LABEL, ProvisionError
from provisioners.deployers.operator import go_module_dir
from provisioners.kube.api import Kube
from provisioners.util.waits import WaitTimeout, wait_for

API_MODULE = "github.com/openshift/api"
#: The module has no release tags since 2018 (v3.9.0); pin a commit of its master (June 2025).
API_VERSION = "v0.0.0-20250602203052-b29811a290c7"
SCC_CRD_FILE = "security/v1/zz_generated.crd-manifests/0000_03_config-operator_01_securitycontextconstraints.crd.yaml"
SECURITY_API = "security.openshift.io/v1"
SCC_KIND = "SecurityContextConstraints"
SCC_CRD = "securitycontextconstraints.security.openshift.io"

#: The book's service accounts: the operator's and the Ray pods' (and the Job's).
OPERATOR_SA = "ray-operator-serviceaccount"
RAY_SA = "ray-node-serviceaccount"
#: The user the operator and Ray images run as (OpenShift would assign one of its own).
RUN_AS = 1000

#: Pod Security Admission's strictest level, enforced by the apiserver on the namespace.
PSA_RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}

#: Volume kinds both shipped SCCs allow.
_VOLUMES = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
]
_CLOSED = {
    "allowHostDirVolumePlugin": False,
    "allowHostIPC": False,
    "allowHostNetwork": False,
    "allowHostPID": False,
    "allowHostPorts": False,
    "allowPrivilegedContainer": False,
    "defaultAddCapabilities": [],
    "readOnlyRootFilesystem": False,
    "users": [],
    "volumes": _VOLUMES,
}


def run_as_user(*, seccomp: bool) -> dict[str, Any]:
    """Pod settings (for ``OperatorMode.pod_defaults``) of a pod running as user 1000.

    ``seccomp``: name the runtime's default profile, as PSA ``restricted`` requires; on a real
    OpenShift the SCC sets it (``anyuid`` lists no profiles, so a pod naming one is refused).
    """
    pod: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
    }
    if seccomp:
        pod["seccompProfile"] = {"type": "RuntimeDefault"}
    return {
        "securityContext": pod,
        "containerSecurityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        # The images have no user 1000 and so no home it may write (Ray caches under ~).
        "containerEnv": [{"name": "HOME", "value": "/tmp"}],
    }


def scc_objects(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """``anyuid`` and ``restricted-v2`` as OpenShift 4 ships them (its bootstrap SCCs).

    Where OpenShift writes ``null`` (no capabilities, no priority) these say ``[]`` and ``0``,
    which OpenShift reads the same: the CRD marks those fields required but nullable, and
    JSON Schema (our offline check) knows no ``nullable``.
    """

    def scc(name: str, description: str, **fields: Any) -> dict[str, Any]:
        return {
            "apiVersion": SECURITY_API,
            "kind": SCC_KIND,
            "metadata": {
                "name": name,
                "labels": dict(labels),
                "annotations": {"kubernetes.io/description": description},
            },
            **_CLOSED,
            **fields,
        }

    return [
        scc(
            "anyuid",
            "anyuid provides all features of the restricted SCC but allows users to run with "
            "any UID and any GID.",
            allowPrivilegeEscalation=True,
            allowedCapabilities=[],
            fsGroup={"type": "RunAsAny"},
            groups=["system:cluster-admins"],
            priority=10,
            requiredDropCapabilities=["MKNOD"],
            runAsUser={"type": "RunAsAny"},
            seLinuxContext={"type": "MustRunAs"},
            supplementalGroups={"type": "RunAsAny"},
        ),
        scc(
            "restricted-v2",
            "restricted-v2 denies access to all host features and requires pods to be run with "
            "a UID, and SELinux context that are allocated to the namespace.",
            allowPrivilegeEscalation=False,
            allowedCapabilities=["NET_BIND_SERVICE"],
            fsGroup={"type": "MustRunAs"},
            groups=[],
            priority=0,
            requiredDropCapabilities=["ALL"],
            runAsUser={"type": "MustRunAsRange"},
            seLinuxContext={"type": "MustRunAs"},
            seccompProfiles=["runtime/default"],
            supplementalGroups={"type": "RunAsAny"},
        ),
    ]


def scc_role_name(scc: str) -> str:
    """OpenShift's built-in ClusterRole allowing ``use`` of one SCC."""
    return f"system:openshift:scc:{scc}"


def scc_role(scc: str, labels: Mapping[str, str], name: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name or scc_role_name(scc), "labels": dict(labels)},
        "rules": [
            {
                "apiGroups": ["security.openshift.io"],
                "resources": ["securitycontextconstraints"],
                "resourceNames": [scc],
                "verbs": ["use"],
            }
        ],
    }


def scc_grant(
    role: str, namespace: str, service_accounts: Iterable[str], labels: Mapping[str, str]
) -> dict[str, Any]:
    """The RoleBinding ``oc adm policy add-scc-to-user SCC -z SA`` makes (named after the role)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": role, "namespace": namespace, "labels": dict(labels)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"kind": "ServiceAccount", "name": sa, "namespace": namespace}
            for sa in service_accounts
        ],
    }


def service_account(name: str, namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
    }


def scc_crd(timeout: float) -> dict[str, Any]:
    """The SecurityContextConstraints CRD of the pinned ``github.com/openshift/api``."""
    path = go_module_dir(API_MODULE, API_VERSION, timeout) / SCC_CRD_FILE
    if not path.is_file():
        raise ProvisionError(f"{API_MODULE}@{API_VERSION} has no {SCC_CRD_FILE}")
    crd = dict(yaml.safe_load(path.read_text()))
    crd["metadata"].pop("annotations", None)  # OpenShift's release-payload bookkeeping
    return crd


def serves_security_api(kube: Kube) -> bool:
    """True when the cluster serves ``security.openshift.io/v1`` SCCs (OpenShift does)."""
    import kubernetes.dynamic.exceptions as dexc

    try:
        kube.resource(SECURITY_API, SCC_KIND)
    except dexc.ResourceNotFoundError:
        return False
    return True


def wait_established(kube: Kube, name: str, timeout: float) -> None:
    """A CRD accepted by the apiserver, so objects of its kind can be applied."""

    def established() -> bool:
        crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name) or {}
        conds = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

    try:
        wait_for(established, timeout=timeout, what=f"CRD {name} to be established", interval=0.5)
    except WaitTimeout as exc:
        raise ProvisionError(str(exc)) from None


def scc_grants(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    """Bindings that let service accounts of ``namespace`` use an SCC, however they were made."""
    out = []
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        ns = namespace if kind == "RoleBinding" else None
        for b in kube.list_objects("rbac.authorization.k8s.io/v1", kind, namespace=ns):
            role = (b.get("roleRef") or {}).get("name", "")
            subjects = b.get("subjects") or []
            grants_scc = role.startswith("system:openshift:scc:") or "-scc-" in role
            if grants_scc and any(s.get("namespace") == namespace for s in subjects):
                out.append(b)
    return out


def run_labels(run_id: str) -> dict[str, str]:
    return {RUN_ID_LABEL: run_id}
