"""The node verdict: a cluster short of a node is diagnosed once per mode, naming the dead node."""

from __future__ import annotations

import time

import pytest
from harness_fakes import events, modes, run, write_fakes

# Three checks that need the nodes, in two files (module-scoped fixtures used to wait per file).
NODE_CHECKS = """
def test_a(ray_alive_nodes):
    pass

def test_b(ray_alive_nodes):
    pass
"""


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(test_one=NODE_CHECKS, test_two="def test_c(ray_alive_nodes):\n    pass\n")


def test_short_cluster_fails_every_node_check_from_one_wait_naming_the_dead_node(
    pytester: pytest.Pytester,
) -> None:
    t0 = time.monotonic()
    result = run(pytester, "--ray-node-timeout", "1", *modes("short=ShortProvisioner"))
    elapsed = time.monotonic() - t0
    result.assert_outcomes(errors=3)
    assert elapsed < 10, f"three node checks took {elapsed:.1f} s: the wait was not shared"
    # One wait, through one dashboard forward, for the whole mode.
    assert events(pytester, "forward") == [("forward", "short")]
    message = [
        "short: 2 of 3 node(s) alive after 1.? s (Ray's state API):",
        "  DEAD dead3333dead at 10.0.0.3 (worker2) since ??:??:??:"
        " Unexpected termination: health check failed",
        "  alive aaaa1111aaaa at 10.0.0.1 (head)",
        "  alive bbbb2222bbbb at 10.0.0.2 (worker1)",
    ]
    for test in ("test_a", "test_b", "test_c"):
        result.stdout.fnmatch_lines([f"*ERROR at setup of {test}?short?*", *message])
    # The progress line says what was found, once.
    progress = [
        line for line in result.stdout.lines if "alive" in line and "[ray-conformance]" in line
    ]
    assert len(progress) == 1, progress
    assert "not ready after 1." in progress[0]
    assert "2 of 3 node(s) alive; DEAD dead3333dead at 10.0.0.3" in progress[0]


def test_cluster_with_its_nodes_reports_what_it_found(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        fits="""
        from dataclasses import replace
        from fakemod import ShortProvisioner

        class FitProvisioner(ShortProvisioner):
            def provision(self, spec):
                return replace(super().provision(spec), expected_nodes=2)
        """
    )
    result = run(pytester, "--ray-provisioner", "fit=fits:FitProvisioner")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*fit (+*): ready in *: 2 of 2 node(s) alive"])
