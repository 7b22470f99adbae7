"""The operator-upgrade suite (suites/test_operator_upgrade.py) against fake operators.

A fake's dashboard lists the Ray nodes; its "upgrade" keeps them, restarts them, or fails, and
its operator reconciles or not. Each check must fail on the upgrade it exists to catch.
"""

from __future__ import annotations

import shutil

import pytest
from harness_fakes import REPO, modes, run, write_fakes

UPGRADE_FAKES = '''
import contextlib
import json
from dataclasses import replace

from fakemod import FakeProvisioner, json_server
from provisioners.contract.base import Endpoint, OperatorUpgrade

BEFORE = [
    {"node_id": "head" * 14, "node_ip": "10.0.0.1", "node_name": "head", "state": "ALIVE"},
    {"node_id": "wrk1" * 14, "node_ip": "10.0.0.2", "node_name": "worker", "state": "ALIVE"},
]
RESTARTED = [
    {"node_id": "hea2" * 14, "node_ip": "10.0.0.1", "node_name": "head", "state": "ALIVE"},
    {"node_id": "wrk2" * 14, "node_ip": "10.0.0.3", "node_name": "worker", "state": "ALIVE"},
]


class KeepsNodes(FakeProvisioner):
    """KubeRay v1.4.0 -> v1.5.0 that leaves the Ray nodes alone and reconciles."""

    def provision(self, spec):
        self.listed = BEFORE
        fake = self
        self.server = json_server({
            "/api/version": {"ray_version": "2.60.0"},
            "/api/v0/nodes": lambda: {"data": {"result": {"result": fake.listed}}},
        })
        return replace(super().provision(spec), expected_nodes=2)

    @contextlib.contextmanager
    def port_forward(self, remote_port):
        yield Endpoint("127.0.0.1", self.server.server_address[1])

    def operator_upgrade(self):
        return OperatorUpgrade("KubeRay", "v1.4.0", "v1.5.0")

    def upgrade_operator(self, timeout):
        return "KubeRay v1.5.0 (op:v1.5.0) runs as op-2"

    def reconcile_probe(self, timeout):
        return "Service ns/head-svc deleted and made again by the operator in 1.0 s"

    def run_in_cluster(self, script, timeout):
        nodes = self.listed
        return "RESULT " + json.dumps({
            "iterations": 3,
            "pinned": {n["node_id"]: 3 for n in nodes},
            "spread": {n["node_id"]: 1 for n in nodes},
            "joined": [], "load": {"tasks": 2, "submitted": 2, "done": 2, "seconds": 1.0, "tasks_per_s": 2.0, "deadline_s": 9.0},
            "misplaced": [],
            "alive": [{"node_id": n["node_id"], "hostname": n["node_name"], "ip": n["node_ip"]} for n in nodes],
        })

    def teardown(self):
        super().teardown()
        if getattr(self, "server", None):
            self.server.shutdown()
            self.server.server_close()


class RestartsNodes(KeepsNodes):
    """The upgrade recreates every Ray pod (a changed pod template)."""

    def upgrade_operator(self, timeout):
        self.listed = RESTARTED
        return super().upgrade_operator(timeout)


class NeverReconciles(KeepsNodes):
    """The new operator runs but does not reconcile the cluster made under the old one."""

    def reconcile_probe(self, timeout):
        raise RuntimeError("timed out after 3 s waiting for the operator to make Service ns/head-svc again")


class FailedUpgrade(KeepsNodes):
    """The new operator never becomes ready."""

    def upgrade_operator(self, timeout):
        raise RuntimeError("deployment ns/kuberay-operator never ran only op:v1.5.0")


class NoUpgradeAsked(KeepsNodes):
    def operator_upgrade(self):
        return None
'''


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(upgradefakes=UPGRADE_FAKES)
    suites = pytester.mkdir("suites")
    (suites / "__init__.py").write_text("")
    for name in ("test_operator_upgrade.py", "test_spread.py"):
        shutil.copy(REPO / "suites" / name, suites / name)
    shutil.copytree(REPO / "suites" / "scripts", suites / "scripts")


def _run(pytester: pytest.Pytester, cls: str) -> pytest.RunResult:
    args = [a.replace("fakemod:", "upgradefakes:") for a in modes(f"fake={cls}")]
    return run(pytester, "suites/test_operator_upgrade.py", *args, "-rs")


def test_upgrade_that_keeps_the_cluster_passes(pytester: pytest.Pytester) -> None:
    _run(pytester, "KeepsNodes").assert_outcomes(passed=3)


def test_upgrade_that_restarts_ray_nodes_fails_naming_them(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "RestartsNodes")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*KubeRay v1.4.0 -> v1.5.0 (KubeRay v1.5.0 (op:v1.5.0) runs as op-2) changed the Ray"
            " nodes: gone headheadhead at 10.0.0.1 (head), wrk1wrk1wrk1 at 10.0.0.2 (worker);"
            " new hea2hea2hea2 at 10.0.0.1 (head), wrk2wrk2wrk2 at 10.0.0.3 (worker)",
        ]
    )


def test_operator_that_does_not_reconcile_fails(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "NeverReconciles")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*KubeRay v1.5.0 (KubeRay v1.5.0 (op:v1.5.0) runs as op-2) does not reconcile the"
            " cluster made under v1.4.0: timed out after 3 s waiting for the operator*",
        ]
    )


def test_failed_upgrade_fails_every_check_naming_it(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "FailedUpgrade")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        ["*KubeRay v1.4.0 -> v1.5.0: deployment ns/kuberay-operator never ran only op:v1.5.0*"]
    )


def test_skipped_without_an_upgrade(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "NoUpgradeAsked")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*fake: this run was asked for no operator upgrade*"])
