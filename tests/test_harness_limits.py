"""Time limits and interrupts never skip the teardown, and always leave a report.

pytest-timeout bounds a check's call (signal method: the check fails, the run goes on);
provisioning and teardown run under the harness's own limits; SIGINT/SIGTERM interrupt once
and the teardown runs shielded from further signals.
"""

from __future__ import annotations

import json
import time

import pytest
from harness_fakes import CHECKS, calls, events, modes, run, run_subprocess, write_fakes


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)


def _record(pytester: pytest.Pytester, mode: str) -> dict[str, object]:
    (path,) = pytester.path.glob(f"reports/*/*/{mode}.json")
    data: dict[str, object] = json.loads(path.read_text())
    return data


def _results(pytester: pytest.Pytester) -> dict[str, object]:
    (path,) = pytester.path.glob("reports/*/results.json")
    data: dict[str, object] = json.loads(path.read_text())
    return data


def _report_args(pytester: pytest.Pytester) -> list[str]:
    return ["--ray-report-dir", str(pytester.path / "reports" / "run")]


def test_a_check_past_its_time_limit_fails_and_the_cluster_is_torn_down(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_a="""
        import time
        import pytest

        @pytest.mark.timeout(1)
        def test_overruns(ray_cluster):
            time.sleep(30)

        def test_after(ray_cluster):
            pass
        """
    )
    started = time.monotonic()
    result = run_subprocess(pytester, *_report_args(pytester), *modes("fake=FakeProvisioner"))
    assert time.monotonic() - started < 60
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*Timeout (>1.0s)*"])
    assert events(pytester, "provision", "teardown") == [
        ("provision", "fake"),
        ("teardown", "fake"),
    ]
    assert _record(pytester, "fake")["status"] == "torn-down"
    assert _results(pytester)["exit_status"] == 1


def test_a_hung_provision_ends_at_its_limit_naming_it_and_tears_down(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_a=CHECKS)
    started = time.monotonic()
    result = run(
        pytester,
        "--ray-provision-timeout",
        "1",
        *_report_args(pytester),
        *modes("fake=HangingProvisioner"),
    )
    assert time.monotonic() - started < 30
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "fake: provisioning failed: provisioning (--ray-provision-timeout 1 s)"
            " did not end within its limit of 3 s"
        ]
    )
    assert events(pytester, "provision", "teardown") == [
        ("provision", "fake"),
        ("teardown", "fake"),
    ]
    record = _record(pytester, "fake")
    assert record["status"] == "provision-failed"  # torn down, and still why it never ran
    assert str(record["reason"]).startswith("LimitExceeded: provisioning")


def test_a_hung_teardown_ends_at_its_limit_listing_what_is_left(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_a=CHECKS)
    started = time.monotonic()
    result = run(
        pytester,
        "--ray-teardown-timeout",
        "1",
        *_report_args(pytester),
        *modes("fake=HangingTeardownProvisioner"),
    )
    assert time.monotonic() - started < 30
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*fake: teardown (--ray-teardown-timeout) did not end within its limit of 1 s;"
            " left: process fake-head",
        ]
    )
    record = _record(pytester, "fake")
    assert record["status"] == "teardown-failed"
    assert [item["name"] for item in record["inventory_after"]] == ["fake-head"]  # type: ignore[attr-defined]
    assert _results(pytester)["exit_status"] == 1


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_while_provisioning_tears_down_and_writes_the_report(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, signum: str
) -> None:
    monkeypatch.setenv("FAKE_SIGNAL", signum)
    pytester.makepyfile(test_a=CHECKS)
    result = run_subprocess(
        pytester, *_report_args(pytester), *modes("fake=SignalInProvisionProvisioner")
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert events(pytester, "provision", "teardown") == [
        ("provision", "fake"),
        ("teardown", "fake"),
    ]
    result.stdout.fnmatch_lines(
        ["*fake (+*): interrupted: removed 1 item(s) (process fake-head); nothing left"]
    )
    assert _results(pytester)["exit_status"] == int(pytest.ExitCode.INTERRUPTED)
    assert _record(pytester, "fake")["interrupted"] is True


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_during_a_check_tears_down_and_writes_the_report(
    pytester: pytest.Pytester, signum: str
) -> None:
    pytester.makepyfile(
        test_a=f"""
        import os, signal

        def test_signalled(ray_cluster):
            os.kill(os.getpid(), signal.{signum})

        def test_never_reached(ray_cluster):
            pass
        """
    )
    result = run_subprocess(pytester, *_report_args(pytester), *modes("fake=FakeProvisioner"))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert events(pytester, "provision", "teardown") == [
        ("provision", "fake"),
        ("teardown", "fake"),
    ]
    result.stdout.fnmatch_lines(["*fake (+*): interrupted: removed 1 item(s)*; nothing left"])
    assert _results(pytester)["exit_status"] == int(pytest.ExitCode.INTERRUPTED)


def test_signals_during_the_teardown_do_not_cut_it_short(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=CHECKS, test_b=CHECKS)
    result = run_subprocess(
        pytester,
        *_report_args(pytester),
        *modes("alpha=SignalInTeardownProvisioner", "beta=FakeProvisioner"),
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    # Both signals were answered with what is still being removed; the teardown finished and
    # the run stopped there (beta never started).
    result.stdout.fnmatch_lines(
        [
            "*run (+*): SIGINT: the teardown goes on so nothing is orphaned;"
            " still being removed: process alpha-head",
            "*run (+*): SIGINT: the teardown goes on so nothing is orphaned;"
            " still being removed: process alpha-head",
            "*alpha (+*): interrupted: removed 1 item(s) (process alpha-head); nothing left",
        ]
    )
    assert [c["event"] for c in calls(pytester) if c["mode"] == "alpha"][-2:] == [
        "teardown-start",
        "teardown",
    ]
    assert not [c for c in calls(pytester) if c["mode"] == "beta"]
    assert _results(pytester)["exit_status"] == int(pytest.ExitCode.INTERRUPTED)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "1e6"])
@pytest.mark.parametrize(
    "flag", ["--ray-provision-timeout", "--ray-teardown-timeout", "--ray-node-timeout"]
)
def test_a_timeout_that_never_ends_is_a_usage_error(
    pytester: pytest.Pytester, flag: str, value: str
) -> None:
    pytester.makepyfile(test_a=CHECKS)
    result = run(pytester, f"{flag}={value}", *modes("fake=FakeProvisioner"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = "must be at most 86400" if value == "1e6" else "expected a finite number"
    result.stderr.fnmatch_lines([f"ERROR: {flag} '{value}': {expected}"])
    assert not calls(pytester)
