"""OpenShift's rules, applied to any Kubernetes source: the book's changes for OpenShift.

The operator (built to run as user 1000) runs as ``ray-operator-serviceaccount``, the Ray pods
and the test Job as ``ray-node-serviceaccount``; each is granted the ``anyuid`` SCC (``oc adm
policy add-scc-to-user anyuid -z SA`` when ``oc`` is on PATH, else the RoleBinding that command
makes) and runs as user 1000; nothing else is loosened. Teardown removes the grants; the
inventory lists them. A cluster that does not serve ``security.openshift.io/v1`` is not an
OpenShift cluster: the mode is SKIPPED. In the rehearsal (a kind cluster of the run) the rules
first install OpenShift's SCC API and SCCs (:mod:`provisioners.rules.scc`) and put the run's
namespace under Pod Security Admission ``restricted``.
"""

from __future__ import annotations

import shutil
from typing import Any

from provisioners.contract.base import RUN_ID_LABEL, ClusterSpec, InventoryItem, ProvisionError
from provisioners.contract.options import Option
from provisioners.deployers.kuberay import KubeRayDeployer
from provisioners.deployers.operator import KubeSource
from provisioners.kube.api import ref
from provisioners.rules import scc
from provisioners.util.naming import run_name
from provisioners.util.runner import CommandError, CommandTimeout, run

REHEARSAL = Option.switch(
    "openshift-rehearsal",
    "openshift: rehearse on a kind cluster of the run, with OpenShift's SCC API and Pod "
    "Security Admission restricted on the run's namespace",
)


class OpenShiftRules:
    """OpenShift's rules on any Kubernetes cluster: the book's service accounts granted
    ``anyuid``, every pod as user 1000; in the rehearsal, OpenShift's SCC API and SCCs
    installed first and Pod Security Admission ``restricted`` on the run's namespace."""

    def __init__(self) -> None:
        self._oc_granted: list[str] = []  # service accounts granted anyuid through `oc`

    def options(self) -> tuple[Option[Any], ...]:
        return (REHEARSAL,)

    def missing_prerequisites(self, spec: ClusterSpec, source: KubeSource) -> list[str]:
        if spec.get(REHEARSAL):
            return []  # the rehearsal installs what OpenShift has built in
        kube = source.make_cluster(spec).create(spec.timeouts.preflight)
        try:
            kube.server_version(spec.timeouts.preflight)
            # An API that does not answer is the provision's failure to report, not a skip.
            if not scc.serves_security_api(kube):
                return [
                    f"not an OpenShift cluster ({kube.where()} serves no {scc.SECURITY_API}); "
                    "try --ray-openshift-rehearsal or kube-operator"
                ]
        except ProvisionError:
            pass
        finally:
            kube.close()
        return []

    def pod_defaults(self, spec: ClusterSpec) -> dict[str, Any]:
        return scc.run_as_user(seccomp=spec.get(REHEARSAL))

    def deployer_settings(self, spec: ClusterSpec) -> dict[str, Any]:
        return {
            "namespace_labels": scc.PSA_RESTRICTED if spec.get(REHEARSAL) else {},
            "operator_service_account": scc.OPERATOR_SA,
            "ray_service_account": scc.RAY_SA,
        }

    def before_deploy(self, spec: ClusterSpec, deployer: KubeRayDeployer, timeout: float) -> None:
        kube = deployer.kube
        labels = scc.run_labels(spec.run_id)
        if spec.get(REHEARSAL):
            # What an OpenShift cluster has built in: the SCC API, its SCCs and their roles.
            crd = scc.scc_crd(timeout)
            crd["metadata"]["labels"] = labels
            deployer.apply(crd)
            scc.wait_established(kube, scc.SCC_CRD, min(timeout, 60))
            for obj in scc.scc_objects(labels):
                deployer.apply(obj)
            for name in ("anyuid", "restricted-v2"):
                deployer.apply(scc.scc_role(name, labels))
        if not scc.serves_security_api(kube):
            raise ProvisionError(
                f"not an OpenShift cluster: {kube.where()} serves no {scc.SECURITY_API}"
            )
        deployer.ensure_namespace()
        ns = deployer.namespace
        deployer.apply(scc.service_account(scc.RAY_SA, ns, labels))
        accounts = (scc.OPERATOR_SA, scc.RAY_SA)
        oc = None if spec.get(REHEARSAL) else shutil.which("oc")
        if oc is not None:
            for sa in accounts:
                self._oc_policy(oc, kube.kubeconfig, kube.context, "add-scc-to-user", sa, ns)
                self._oc_granted.append(sa)
            how = "oc adm policy add-scc-to-user"
        else:
            role = scc.scc_role_name("anyuid")
            if kube.get("rbac.authorization.k8s.io/v1", "ClusterRole", role) is None:
                # An OpenShift older than its per-SCC roles: a role of the run's own.
                role = run_name(spec.run_id, "scc-anyuid")
                deployer.apply(scc.scc_role("anyuid", labels, role))
            deployer.apply(scc.scc_grant(role, ns, accounts, labels))
            how = f"RoleBinding {ns}/{role}"
        spec.progress(f"anyuid granted to {', '.join(accounts)} ({how})")

    def _oc_policy(
        self, oc: str, kubeconfig: Any, context: str | None, verb: str, sa: str, ns: str
    ) -> None:
        argv = [oc, "--kubeconfig", str(kubeconfig)]
        argv += ["--context", context] if context else []
        argv += ["adm", "policy", verb, "anyuid", "-z", sa, "-n", ns]
        try:
            run(argv, 60, what=f"oc adm policy {verb} anyuid -z {sa}")
        except (CommandError, CommandTimeout) as exc:
            raise ProvisionError(str(exc)) from None

    def before_teardown(self, deployer: KubeRayDeployer) -> list[str]:
        problems = []
        kube = deployer.kube
        oc = shutil.which("oc") or "oc"
        for sa in list(self._oc_granted):
            try:
                self._oc_policy(
                    oc,
                    kube.kubeconfig,
                    kube.context,
                    "remove-scc-from-user",
                    sa,
                    deployer.namespace,
                )
                self._oc_granted.remove(sa)
            except (OSError, ProvisionError) as exc:
                problems.append(str(exc))  # the inventory still lists the grant
        return problems

    def inventory(self, deployer: KubeRayDeployer) -> list[InventoryItem]:
        items = []
        kube, run_id = deployer.kube, deployer.run_id
        for b in scc.scc_grants(kube, deployer.namespace):
            items.append(
                InventoryItem(b["kind"].lower(), ref(b), run_id, "SCC grant to the run's SAs")
            )
        # The rehearsal's stand-ins for OpenShift's own SCCs (none on a real cluster).
        selector = f"{RUN_ID_LABEL}={run_id}"
        for o in kube.list_objects(scc.SECURITY_API, scc.SCC_KIND, selector=selector):
            items.append(InventoryItem("securitycontextconstraints", ref(o), run_id))
        return items
