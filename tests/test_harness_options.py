"""Options and markers: every UsageError's text, -k selection, --strict-markers."""

from __future__ import annotations

import pytest
from harness_fakes import (
    CHECKS,
    calls,
    events,
    literal,
    make_vendor_dist,
    modes,
    run,
    run_subprocess,
    write_fakes,
)


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
        (["--ray-workers=-1"], "--ray-workers '-1': must be at least 0"),
        (["--ray-workers", "two"], "--ray-workers 'two': expected a whole number"),
        (
            ["--ray-report-dir", "afile.txt/reports"],
            "--ray-report-dir afile.txt/reports: not writable (Not a directory);"
            " pick a directory you can write",
        ),
        (["--ray-opt", "no-equals-sign"], "--ray-opt 'no-equals-sign': expected KEY=VALUE"),
        (["--ray-opt", "=value"], "--ray-opt '=value': expected KEY=VALUE"),
        (
            ["--ray-opt", "nope=1"],
            "--ray-opt nope: no selected mode declares it; known keys: none",
        ),
        (["--ray-node-timeout", "soon"], "--ray-node-timeout 'soon': expected a number"),
        (
            ["--ray-run-id", "Run_1"],
            "--ray-run-id 'Run_1': use 1-31 lowercase letters, digits and dashes",
        ),
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
        "opt-unknown-key",
        "non-number-timeout",
        "bad-run-id",
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


def option_values(pytester: pytest.Pytester) -> dict[str, object]:
    """What the OptionsProvisioner was handed (one provision)."""
    [seen] = [c for c in calls(pytester) if c["event"] == "options"]
    return seen


@pytest.fixture
def vendor(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A vendor package registering OptionsProvisioner, which declares two options."""
    make_vendor_dist(pytester, monkeypatch, "vendor = fakemod:OptionsProvisioner")
    return pytester


def test_vendor_option_is_a_flag_whose_typed_value_reaches_the_mode(
    vendor: pytest.Pytester,
) -> None:
    result = run_subprocess(
        vendor,
        "--ray-modes",
        "vendor",
        "--ray-fake-replicas",
        "5",
        "--ray-fake-fast",
        "--ray-workers",
        "2",
        "--ray-node-timeout",
        "7",
    )
    result.assert_outcomes(passed=2)
    seen = option_values(vendor)
    # Exactly the mode's declared options, typed; the harness's go to workers and timeouts.
    assert seen["options"] == {"fake_replicas": 5, "fake_fast": True}
    assert seen["replicas"] == 5
    assert seen["workers"] == 2
    assert seen["timeouts"] == [900.0, 7.0]


def test_vendor_option_defaults_and_ini_twin(vendor: pytest.Pytester) -> None:
    vendor.makeini("[pytest]\nray_fake_fast = true\n")
    run_subprocess(vendor, "--ray-modes", "vendor").assert_outcomes(passed=2)
    assert option_values(vendor)["options"] == {"fake_replicas": 2, "fake_fast": True}


def test_vendor_option_bad_value_is_a_usage_error_naming_the_flag(
    vendor: pytest.Pytester,
) -> None:
    result = run_subprocess(vendor, "--ray-modes", "vendor", "--ray-fake-replicas", "lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --ray-fake-replicas 'lots': expected a whole number"])
    assert events(vendor) == []


def test_vendor_option_is_in_help_with_its_default_and_mode(vendor: pytest.Pytester) -> None:
    result = run_subprocess(vendor, "--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "Ray conformance*",
            "  --ray-fake-replicas=N",
            "* fake: replicas per node (default: 2) ?vendor?",
            "  --ray-fake-fast * fake: skip the slow path ?vendor?",
        ]
    )
    result.stdout.fnmatch_lines(["*ray_fake_replicas (string):*"])


def test_opt_sets_a_declared_option_of_a_class_given_on_the_command_line(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, *modes("fake=OptionsProvisioner"), "--ray-opt", "fake_replicas=3")
    result.assert_outcomes(passed=2)
    assert option_values(pytester)["options"] == {"fake_replicas": 3, "fake_fast": False}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("fake_replicas=0", "--ray-opt fake_replicas='0': must be at least 1"),
        ("fake_fast=maybe", "--ray-opt fake_fast='maybe': expected true or false"),
        (
            "replicas=3",
            "--ray-opt replicas: no selected mode declares it; known keys: fake_fast, fake_replicas",
        ),
    ],
    ids=["below-minimum", "not-a-bool", "unknown-key"],
)
def test_opt_bad_pair_is_a_usage_error(pytester: pytest.Pytester, pair: str, message: str) -> None:
    result = run(pytester, *modes("fake=OptionsProvisioner"), "--ray-opt", pair)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: " + message])


@pytest.mark.parametrize("args", [["--collect-only"], ["--help"], ["--markers"]])
def test_runs_that_run_no_test_write_no_report_bundle(
    pytester: pytest.Pytester, args: list[str]
) -> None:
    result = run(pytester, *args, *modes("fake=FakeProvisioner"))
    assert result.ret == pytest.ExitCode.OK
    assert not (pytester.path / "reports").exists()
    assert not list(pytester.path.rglob("junit.xml"))


def test_an_option_of_an_unknown_kind_is_refused_naming_the_kinds() -> None:
    from provisioners.contract.options import Option

    assert Option("zone", "a zone", str, "a", kind="multi").kind == "multi"
    with pytest.raises(
        ValueError, match=r"option 'zone': kind 'flag' is not one of string, bool, multi"
    ):
        Option("zone", "a zone", str, "a", kind="flag")  # type: ignore[arg-type]
