"""Under xdist (-n 2 --dist loadgroup): one provision per mode, one run id, one report."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from harness_fakes import CHECKS, LEAK_SUITE, calls, modes, run_subprocess, write_fakes


@pytest.fixture(params=[["--dist", "loadgroup"], []], ids=["loadgroup", "plain-n"])
def xdist_result(pytester: pytest.Pytester, request: pytest.FixtureRequest) -> pytest.RunResult:
    """Explicit --dist loadgroup, and plain -n (which the plugin turns into loadgroup)."""
    write_fakes(pytester)
    pytester.makepyfile(test_checks=CHECKS, test_leak=LEAK_SUITE.read_text())
    result = run_subprocess(
        pytester,
        "-n",
        "2",
        *request.param,
        "--ray-report-dir",
        str(pytester.path / "report"),
        *modes("alpha=FakeProvisioner", "beta=FakeProvisioner"),
    )
    result.assert_outcomes(passed=8)
    return result


def test_xdist_provisions_and_tears_down_each_mode_once(
    pytester: pytest.Pytester, xdist_result: pytest.RunResult
) -> None:
    by_event = Counter((c["event"], c["mode"]) for c in calls(pytester))
    assert by_event == {
        ("provision", "alpha"): 1,
        ("provision", "beta"): 1,
        ("teardown", "alpha"): 1,
        ("teardown", "beta"): 1,
    }, f"calls by worker: {[(c['worker'], c['event'], c['mode']) for c in calls(pytester)]}"


def test_xdist_workers_share_the_run_id_and_the_report(
    pytester: pytest.Pytester, xdist_result: pytest.RunResult
) -> None:
    provisions = [c for c in calls(pytester) if c["event"] == "provision"]
    assert provisions
    assert all(c["worker"].startswith("gw") for c in provisions)
    doc = json.loads((pytester.path / "report" / "results.json").read_text())
    assert {c["run_id"] for c in provisions} == {doc["run_id"]}
    assert [m["mode"] for m in doc["modes"]] == ["alpha", "beta"]
    assert {m["status"] for m in doc["modes"]} == {"torn-down"}
