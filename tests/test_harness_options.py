"""Options and markers: every UsageError's text, -k selection, --strict-markers."""

from __future__ import annotations

import pytest
from harness_fakes import CHECKS, events, literal, modes, run, write_fakes


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(test_checks=CHECKS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--ray-modes", "nope"],
            "--ray-modes: unknown mode(s) nope; known modes: *local*, fake",
        ),
        (
            ["--ray-provisioner", "fakemod.FakeProvisioner"],
            literal(
                "--ray-provisioner 'fakemod.FakeProvisioner' is not of the form [NAME=]module:Class"
                " (for example mycloud=mycloud_rc.provisioner:MyCloudProvisioner)"
            ),
        ),
        (["--ray-workers=-1"], "--ray-workers -1: must be at least 0"),
        (["--ray-workers", "two"], "--ray-workers 'two': expected a whole number"),
        (
            ["--ray-report-dir", "afile.txt/reports"],
            "--ray-report-dir afile.txt/reports: not writable (Not a directory);"
            " pick a directory you can write",
        ),
        (["--ray-opt", "no-equals-sign"], "--ray-opt 'no-equals-sign': expected KEY=VALUE"),
        (["--ray-opt", "=value"], "--ray-opt '=value': expected KEY=VALUE"),
        (
            ["--ray-keep-cluster", "-n", "2"],
            "--ray-keep-cluster cannot be combined with -n: xdist workers exit after the run",
        ),
    ],
    ids=[
        "unknown-mode",
        "malformed-provisioner",
        "negative-workers",
        "non-number-workers",
        "unwritable-report-dir",
        "opt-without-equals",
        "opt-without-key",
        "keep-cluster-with-xdist",
    ],
)
def test_bad_option_is_a_usage_error_saying_what_to_fix(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makefile(".txt", afile="a regular file, so nothing can be created under it")
    result = run(pytester, *modes("fake=FakeProvisioner"), *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: " + message])
    assert events(pytester) == []


def test_keyword_selection_never_provisions_the_deselected_mode(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, "-k", "alpha", *modes("alpha=FakeProvisioner", "beta=FakeProvisioner"))
    result.assert_outcomes(passed=2, deselected=2)
    assert events(pytester, "provision", "teardown") == [
        ("provision", "alpha"),
        ("teardown", "alpha"),
    ]


def test_markers_are_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.xdist_group("fake")
        def test_grouped(ray_cluster):
            pass

        @pytest.mark.ray_teardown
        def test_last(ray_teardown):
            assert ray_teardown == []
        """
    )
    # Without xdist, which would register xdist_group itself: the plugin must do it.
    result = run(
        pytester,
        "--strict-markers",
        "-p",
        "no:xdist",
        "test_marked.py",
        *modes("fake=FakeProvisioner"),
    )
    result.assert_outcomes(passed=2)
