"""Mode ``openshift``: the book's changes as objects (offline), and the rehearsal's enforcement
against a real kind cluster: Pod Security Admission ``restricted`` on the run's namespace
refuses the plain ``kind-operator`` pod (root) and admits the ``openshift`` one (user 1000).
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_kube

from provisioners.contract.base import ClusterSpec, ProvisionError
from provisioners.deployers.kuberay import KubeRayDeployer, OperatorSource, RaySize
from provisioners.deployers.operator import module_manifests
from provisioners.kube import validate
from provisioners.kube.api import Kube, one_line
from provisioners.kube.clusters import KindCluster
from provisioners.kube.toolchain.build import KUBERAY_VERSION
from provisioners.modes.openshift import OpenShiftProvisioner
from provisioners.rules import scc
from provisioners.rules.openshift import REHEARSAL, OpenShiftRules
from provisioners.util.naming import run_name
from provisioners.util.waits import wait_for

_GO = shutil.which("go") or (
    "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
)
#: A kind cluster of this module, made as test_kube makes its own.
kind = test_kube.kind
needs_go = pytest.mark.skipif(_GO is None, reason="`go` is not on PATH (modules come from it)")


def _deployer(
    tmp_path: Path, run_id: str, *, openshift: bool, operator: OperatorSource | None = None
) -> KubeRayDeployer:
    rules = OpenShiftRules()
    spec = ClusterSpec("openshift", run_id, tmp_path, options={REHEARSAL.key: True})
    settings: dict[str, Any] = rules.deployer_settings(spec) if openshift else {}
    return KubeRayDeployer(
        Kube(tmp_path / "kubeconfig", cache_file=tmp_path / "cache.json"),
        run_id=run_id,
        namespace=run_name(run_id, "openshift"),
        name="rc-os",
        image="ray-conformance-node:test",
        size=RaySize(workers=1),
        operator=operator,
        workdir=tmp_path,
        progress=lambda _m: None,
        pod_defaults=rules.pod_defaults(spec) if openshift else None,
        **settings,
    )


def _pod_specs(deployer: KubeRayDeployer) -> dict[str, dict[str, Any]]:
    """Every pod template the deployer renders, by what it is."""
    rc = deployer.raycluster()["spec"]
    out = {
        "head": rc["headGroupSpec"]["template"]["spec"],
        "worker": rc["workerGroupSpecs"][0]["template"]["spec"],
        "job": deployer.job("print(1)", 60)[-1]["spec"]["template"]["spec"],
    }
    for o in deployer.operator_objects():
        if o["kind"] == "Deployment":
            out["operator"] = o["spec"]["template"]["spec"]
    return out


@pytest.fixture(scope="module")
def operator_source() -> OperatorSource:
    if _GO is None:
        pytest.skip("`go` is not on PATH: KubeRay's manifests come from its module")
    try:
        manifests = module_manifests(KUBERAY_VERSION, 300)
    except ProvisionError as exc:
        pytest.skip(f"KubeRay's module could not be had: {exc}")
    return OperatorSource(KUBERAY_VERSION, manifests, "ray-conformance-kuberay-operator:test")


# -- offline ----------------------------------------------------------------------------------


def test_every_pod_runs_as_1000_under_the_books_accounts(
    tmp_path: Path, operator_source: OperatorSource
) -> None:
    deployer = _deployer(tmp_path, "t1", openshift=True, operator=operator_source)
    pods = _pod_specs(deployer)
    assert set(pods) == {"head", "worker", "job", "operator"}
    for what, pod in pods.items():
        ctx = pod["securityContext"]
        assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["runAsNonRoot"]) == (1000, 1000, True)
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, what
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, what
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], what
        want = scc.OPERATOR_SA if what == "operator" else scc.RAY_SA
        assert pod["serviceAccountName"] == want, what
    # The operator's RBAC follows its renamed account.
    objs = deployer.operator_objects()
    accounts = [o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"]
    assert accounts == [scc.OPERATOR_SA]
    for o in objs:
        for s in o.get("subjects", []):
            if s.get("kind") == "ServiceAccount":
                assert s["name"] == scc.OPERATOR_SA, o["metadata"]["name"]
    assert (
        deployer.namespace_object()["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )


def test_switching_the_operator_renders_the_new_ones_objects(
    tmp_path: Path, operator_source: OperatorSource
) -> None:
    """The upgrade applies the new release's Deployment, not the old render again: with the
    render cached, an upgrade re-applied the old image and waited out its bound."""
    deployer = _deployer(tmp_path, "t1", openshift=False, operator=operator_source)

    def images(objs: list[dict[str, Any]]) -> list[str]:
        return [
            c["image"]
            for o in objs
            if o["kind"] == "Deployment"
            for c in o["spec"]["template"]["spec"]["containers"]
        ]

    assert images(deployer.operator_objects()) == [operator_source.image]
    new = OperatorSource(
        "v9.9.9", operator_source.manifests, "ray-conformance-kuberay-operator:new"
    )
    assert images(deployer.switch_operator(new)) == [new.image]
    assert images(deployer.operator_objects()) == [new.image]  # and teardown removes those


def test_real_openshift_leaves_seccomp_to_the_scc(tmp_path: Path) -> None:
    """``anyuid`` lists no seccomp profiles: on OpenShift a pod naming one would be refused."""
    rules = OpenShiftRules()
    spec = ClusterSpec("openshift", "t1", tmp_path)
    assert "seccompProfile" not in rules.pod_defaults(spec)["securityContext"]
    assert rules.deployer_settings(spec)["namespace_labels"] == {}


def test_grant_is_what_oc_adm_policy_makes() -> None:
    grant = scc.scc_grant("system:openshift:scc:anyuid", "ns1", [scc.OPERATOR_SA, scc.RAY_SA], {})
    assert grant["kind"] == "RoleBinding"
    assert grant["metadata"] == {
        "name": "system:openshift:scc:anyuid",
        "namespace": "ns1",
        "labels": {},
    }
    assert grant["roleRef"]["name"] == "system:openshift:scc:anyuid"
    assert [s["name"] for s in grant["subjects"]] == [scc.OPERATOR_SA, scc.RAY_SA]
    validate.validate_builtin(grant)
    role = scc.scc_role("anyuid", {})
    assert role["rules"] == [
        {
            "apiGroups": ["security.openshift.io"],
            "resources": ["securitycontextconstraints"],
            "resourceNames": ["anyuid"],
            "verbs": ["use"],
        }
    ]
    validate.validate_builtin(role)


def test_oc_grant_is_the_books_command(tmp_path: Path) -> None:
    """With ``oc`` on PATH the grant and its removal are ``oc adm policy`` itself."""
    log = tmp_path / "oc.log"
    oc = tmp_path / "oc"
    oc.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    oc.chmod(0o755)
    rules = OpenShiftRules()
    kubeconfig = tmp_path / "kubeconfig"
    for verb in ("add-scc-to-user", "remove-scc-from-user"):
        rules._oc_policy(str(oc), kubeconfig, "admin", verb, scc.OPERATOR_SA, "ns1")
    assert log.read_text().splitlines() == [
        f"--kubeconfig {kubeconfig} --context admin adm policy {verb} anyuid -z {scc.OPERATOR_SA} -n ns1"
        for verb in ("add-scc-to-user", "remove-scc-from-user")
    ]


@needs_go
def test_sccs_conform_to_openshifts_crd() -> None:
    crd = scc.scc_crd(300)
    assert crd["metadata"]["name"] == scc.SCC_CRD
    objs = scc.scc_objects({"ray-conformance.run-id": "t1"})
    assert [o["metadata"]["name"] for o in objs] == ["anyuid", "restricted-v2"]
    for o in objs:
        validate.validate_custom(o, crd)


def test_real_mode_without_kubeconfig_is_skipped(tmp_path: Path) -> None:
    spec = ClusterSpec("openshift", "t1", tmp_path)
    missing = OpenShiftProvisioner().missing_prerequisites(spec)
    assert any(m.startswith("no --ray-kubeconfig given (the cluster to test)") for m in missing), (
        missing
    )


# -- against a real kind cluster ------------------------------------------------------------


@pytest.fixture
def rehearsal(kind: tuple[KindCluster, Kube, str], tmp_path: Path) -> Iterator[KubeRayDeployer]:
    """The openshift deployer on the kind cluster, its namespace made (PSA restricted), then removed."""
    _cluster, kube, run_id = kind
    deployer = _deployer(tmp_path, f"{run_id}-{secrets.token_hex(2)}", openshift=True)
    deployer.kube = kube
    try:
        deployer.ensure_namespace()
        yield deployer
    finally:
        deployer.teardown(120)
    assert kube.get("v1", "Namespace", deployer.namespace) is None


def test_plain_kind_is_not_an_openshift_cluster(
    kind: tuple[KindCluster, Kube, str], tmp_path: Path
) -> None:
    _cluster, kube, run_id = kind
    if scc.serves_security_api(kube):
        pytest.skip("another test of this module installed the SCC API first")
    spec = ClusterSpec(
        "openshift",
        run_id,
        tmp_path,
        options={"kubeconfig": kube.kubeconfig, "kubectl": Path(kube.kubectl_path)},
    )
    missing = OpenShiftProvisioner().missing_prerequisites(spec)
    assert any("not an OpenShift cluster" in m for m in missing), missing


def test_root_pod_of_kind_operator_is_rejected_in_the_rehearsal_namespace(
    rehearsal: KubeRayDeployer, tmp_path: Path
) -> None:
    import kubernetes.dynamic.exceptions as dexc

    kube, ns = rehearsal.kube, rehearsal.namespace
    plain = _deployer(tmp_path, rehearsal.run_id, openshift=False)
    rehearsal.apply(scc.service_account(scc.RAY_SA, ns, rehearsal.labels()))
    # kind-operator's pods run as `default`, which Kubernetes adds to a new namespace soon.
    wait_for(
        lambda: kube.get("v1", "ServiceAccount", "default", ns),
        timeout=60,
        what=f"service account {ns}/default",
    )
    pods = kube.resource("v1", "Pod")

    def create(spec: dict[str, Any]) -> None:
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rc-psa"}, "spec": spec}
        pods.create(body=body, namespace=ns, dry_run="All")

    create(_pod_specs(rehearsal)["head"])  # the openshift pod: admitted
    with pytest.raises(dexc.ForbiddenError) as info:  # 403 from the admission
        create(_pod_specs(plain)["head"])  # kind-operator's: root, nothing dropped
    message = one_line(info.value)  # the apiserver's own words
    assert 'violates PodSecurity "restricted:latest"' in message, message
    for violation in (
        "allowPrivilegeEscalation",
        "capabilities",
        "runAsNonRoot",
        "seccompProfile",
    ):
        assert violation in message, message


def test_grants_are_listed_until_teardown_removes_them(rehearsal: KubeRayDeployer) -> None:
    kube, ns = rehearsal.kube, rehearsal.namespace
    role = scc.scc_role_name("anyuid")
    rehearsal.apply(scc.scc_grant(role, ns, [scc.OPERATOR_SA, scc.RAY_SA], rehearsal.labels()))
    listed = [f"{b['kind']}/{b['metadata']['name']}" for b in scc.scc_grants(kube, ns)]
    assert listed == [f"RoleBinding/{role}"]
    assert f"RoleBinding/{ns}/{role}" in {i.name for i in rehearsal.inventory()}
    rehearsal.teardown(120)
    assert scc.scc_grants(kube, ns) == []


def test_the_rehearsal_is_openshifts_rules_on_kind_naming_only_its_own_mode(tmp_path: Path) -> None:
    """A composition, not a mode inside a mode: kind's prerequisites as they are (the harness
    names openshift), never kind-operator's."""
    from provisioners.sources.kube import KindSource
    from provisioners.util import containers

    dead = "unix:///tmp/ray-conformance-no-engine.sock"
    options = {REHEARSAL.key: True, containers.DOCKER_HOST.key: dead}
    spec = ClusterSpec("openshift", "t1", tmp_path, options=options)
    missing = OpenShiftProvisioner().missing_prerequisites(spec)
    assert missing, "no engine answers there"
    kind = KindSource(extras=False).missing_prerequisites(spec)
    assert missing == kind
    assert not any("kind-operator" in m for m in missing), missing
