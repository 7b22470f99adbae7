"""Cluster lifetime: one provision per mode, teardown after failures and Ctrl-C, keep-cluster."""

from __future__ import annotations

import pytest
from harness_fakes import (
    CHECKS,
    LEAK_SUITE,
    calls,
    events,
    literal,
    modes,
    run,
    run_subprocess,
    write_fakes,
)


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)


def test_cluster_provisioned_once_per_mode_across_files(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=CHECKS, test_b=CHECKS)
    result = run(pytester, *modes("fake=FakeProvisioner"))
    result.assert_outcomes(passed=4)
    assert events(pytester, "provision", "teardown") == [
        ("provision", "fake"),
        ("teardown", "fake"),
    ]


def test_modes_provision_once_each_and_tear_down_before_the_next(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_a=CHECKS, test_b=CHECKS)
    result = run(pytester, *modes("alpha=FakeProvisioner", "beta=FakeProvisioner"))
    result.assert_outcomes(passed=8)
    assert events(pytester, "provision", "teardown") == [
        ("provision", "alpha"),
        ("teardown", "alpha"),
        ("provision", "beta"),
        ("teardown", "beta"),
    ]


def test_provision_error_errors_the_tests_and_still_tears_down(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_a=CHECKS)
    result = run(pytester, *modes("fake=FailingProvisioner"))
    result.assert_outcomes(errors=2)
    for test in ("test_one", "test_two"):
        result.stdout.fnmatch_lines(
            [
                f"*ERROR at setup of {test}?fake?*",
                "fake: provisioning failed: head started, worker fake-w1 never joined",
            ]
        )
    # Provisioned once (the error is cached for the session), torn down once.
    assert events(pytester, "provision", "teardown") == [
        ("provision", "fake"),
        ("teardown", "fake"),
    ]


def test_provision_error_is_shown_once_without_a_chained_traceback(
    pytester: pytest.Pytester,
) -> None:
    # The ProvisionError's text is the product; pytest.fail() raised inside `except` chains it,
    # so the ERROR section says it twice around "During handling of the above exception".
    pytester.makepyfile(test_a="def test_one(ray_cluster):\n    pass\n")
    result = run(pytester, *modes("fake=FailingProvisioner"))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["fake: provisioning failed: head started, worker fake-w1*"])
    result.stdout.no_fnmatch_line("*During handling of the above exception*")


def test_unexpected_provision_exception_still_tears_down(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=CHECKS)
    result = run(pytester, *modes("fake=CrashingProvisioner"))
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_one?fake?*",
            "E * RuntimeError: unexpected reply from the fake API",
            "*ERROR at setup of test_two?fake?*",
            "E * RuntimeError: unexpected reply from the fake API",
        ]
    )
    assert events(pytester, "provision", "teardown") == [
        ("provision", "fake"),
        ("teardown", "fake"),
    ]


def test_sigterm_tears_down_like_ctrl_c(pytester: pytest.Pytester) -> None:
    # A CI timeout or `timeout` sends SIGTERM; a kind cluster once outlived such a run.
    pytester.makepyfile(
        test_a="""
        import os, signal

        def test_terminated(ray_cluster):
            os.kill(os.getpid(), signal.SIGTERM)

        def test_never_reached(ray_cluster):
            pass
        """
    )
    result = run_subprocess(pytester, *modes("fake=FakeProvisioner"))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert events(pytester, "provision", "teardown") == [
        ("provision", "fake"),
        ("teardown", "fake"),
    ]


def test_keyboard_interrupt_still_tears_down(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_a="""
        def test_interrupted(ray_cluster):
            raise KeyboardInterrupt

        def test_never_reached(ray_cluster):
            pass
        """
    )
    result = run(pytester, *modes("fake=FakeProvisioner"), no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert events(pytester, "provision", "teardown") == [
        ("provision", "fake"),
        ("teardown", "fake"),
    ]


def test_keep_cluster_skips_teardown_and_prints_access(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leak=LEAK_SUITE.read_text())
    result = run(pytester, "-rs", "--ray-keep-cluster", *modes("fake=FakeProvisioner"))
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            literal("[ray-conformance] fake (+") + "*): kept (--ray-keep-cluster); reach it with:",
            "    dashboard: http://fake.invalid:8265",
            "  remove it with:",
            "    fakectl delete --run *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "SKIPPED ?1? test_leak.py:*: --ray-keep-cluster: the cluster is kept,"
            " so there is no teardown to check"
        ]
    )
    assert events(pytester, "provision", "teardown") == [("provision", "fake")]


def test_run_id_given_reaches_the_spec(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=CHECKS)
    run(pytester, "--ray-run-id", "ci-42", *modes("fake=FakeProvisioner")).assert_outcomes(passed=2)
    assert [c["run_id"] for c in calls(pytester) if c["event"] == "provision"] == ["ci-42"]


def test_keep_cluster_says_when_the_mode_gave_no_remove_command(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_a="def test_one(ray_cluster):\n    pass\n")
    result = run(pytester, "--ray-keep-cluster", *modes("fake=NoRemoveProvisioner"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*kept (--ray-keep-cluster); reach it with:",
            "    dashboard: http://fake.invalid:8265",
            "  fake gave no command to remove it (no 'remove' in its handle's access)",
        ]
    )
