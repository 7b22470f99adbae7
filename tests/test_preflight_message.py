"""The version preflight's message: both sides' versions, and what Ray Client needs."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest
from harness_fakes import REPO, modes, run, write_fakes

from fixtures.clients import client_versions, version_mismatch


def test_preflight_same_versions_pass() -> None:
    assert version_mismatch("2.60.0", "2.60.0", "3.11", "3.11") is None


def test_preflight_ray_mismatch_names_both_versions() -> None:
    message = version_mismatch("2.60.0", "2.59.1", "3.11", "3.11")
    assert message is not None
    assert "Ray 2.60.0 here vs 2.59.1 in the cluster" in message
    assert "same Ray version and Python minor" in message


def test_preflight_python_mismatch_names_both_versions() -> None:
    message = version_mismatch("2.60.0", "2.60.0", "3.11", "3.10")
    assert message is not None
    assert "Python 3.11 here vs 3.10 in the cluster" in message
    assert "Ray 2.60.0" not in message


def test_preflight_both_mismatches_are_reported_together() -> None:
    message = version_mismatch("2.60.0", "2.9.3", "3.11", "3.9")
    assert message is not None
    assert "Ray 2.60.0 here vs 2.9.3" in message
    assert "Python 3.11 here vs 3.9" in message


# A fake mode whose "dashboard" answers /api/version only; port_forward hands out its port.
# Nothing listens for Ray Client: a session attempt would hang or fail late.
FAKE_CLUSTER = """
import contextlib
from fakemod import FakeProvisioner, json_server
from provisioners.contract.base import ClusterHandle, Endpoint

class OldClusterProvisioner(FakeProvisioner):
    def provision(self, spec):
        self.server = json_server({"/api/version": {"ray_version": "2.59.1"}})
        return ClusterHandle(spec.mode, 1, "2.59.1", "3.9", "h:6379")
    @contextlib.contextmanager
    def port_forward(self, remote_port):
        if remote_port != 8265:
            raise AssertionError("a client session was attempted despite the mismatch")
        yield Endpoint("127.0.0.1", self.server.server_address[1])
    def teardown(self):
        self.server.shutdown()
        self.server.server_close()
"""


def test_preflight_mismatch_fails_client_checks_fast(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(oldcluster=FAKE_CLUSTER)
    pytester.makepyfile(test_client="def test_client(ray_client_address):\n    pass\n")
    result = pytester.runpytest(
        "--ray-provisioner",
        "old=oldcluster:OldClusterProvisioner",
        "--ray-report-dir",
        str(pytester.path / "report"),
    )
    result.assert_outcomes(errors=1)
    ray_here, py_here = client_versions()
    result.stdout.fnmatch_lines(
        [
            f"*old: Ray Client needs the same Ray version and Python minor on both sides: "
            f"Ray {ray_here} here vs 2.59.1 in the cluster; Python {py_here} here vs 3.9 in the cluster*"
        ]
    )


def _suite(pytester: pytest.Pytester, *names: str) -> None:
    for name in names:
        pytester.makepyfile(**{name: (REPO / "suites" / f"{name}.py").read_text()})


def test_version_checks_fail_naming_the_node_that_runs_another_ray_and_python(
    pytester: pytest.Pytester,
) -> None:
    """The worker runs Ray 2.9.3 on Python 3.10; the head, the dashboard and the client do not.

    Each check reads the versions on every node (not the handle, not /api/version alone, not the
    harness's own) and names the node that differs.
    """
    write_fakes(pytester)
    _suite(pytester, "test_preflight", "test_dashboard")
    result = run(pytester, *modes("odd=OtherVersionsProvisioner"), "-k", "version or python")
    result.assert_outcomes(failed=3, deselected=2)
    worker = "node bbbb2222bbbb at 10.0.0.2 (worker1) runs Ray 2.9.3, Python 3.10"
    here_ray = importlib.metadata.version("ray")
    here_py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for check, message in (
        ("test_preflight_ray_version_matches_client", f"Ray {here_ray} here; *{worker}*"),
        ("test_preflight_python_minor_matches_client", f"Python {here_py} here; *{worker}"),
        (
            "test_dashboard_version_matches_cluster",
            f"/api/version says Ray {here_ray}, but {worker}",
        ),
    ):
        result.stdout.fnmatch_lines([f"*{check}?odd?*", f"E * AssertionError: {message}"])
    # The head, which matches, is not named.
    assert "aaaa1111aaaa" not in "\n".join(
        line for line in result.outlines if line.startswith("E ")
    )
