"""Finding modes: entry points (built-in and vendor), skips with a reason, broken entries."""

from __future__ import annotations

import fnmatch

import pytest
from harness_fakes import (
    CHECKS,
    events,
    literal,
    make_vendor_dist,
    modes,
    run,
    run_subprocess,
    write_fakes,
)

VENDOR_MODULE = """
from fakemod import FakeProvisioner


class VendorProvisioner(FakeProvisioner):
    pass
"""


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(test_checks=CHECKS, vendormod=VENDOR_MODULE)


def test_missing_prerequisites_skip_every_test_with_the_reason(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, "-rs", *modes("fake=UnreadyProvisioner"))
    result.assert_outcomes(skipped=2)
    # Skips from a fixture are reported at each test's line, so one summary line per test.
    reason = "fake: the `frob` binary is not on PATH"
    result.stdout.fnmatch_lines([f"SKIPPED ?1? test_checks.py:*: {reason}"] * 2)
    assert events(pytester) == []  # neither provision nor teardown


def test_broken_entry_point_nobody_named_skips_its_mode_and_warns(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_vendor_dist(pytester, monkeypatch, "broken = nomod:Nope")
    # No --ray-modes: every registered mode is selected, and the broken one only warns.
    result = run_subprocess(pytester, "-rs", "-k", "broken")
    assert result.ret == pytest.ExitCode.OK
    error = "cannot load nomod:Nope: ModuleNotFoundError: No module named 'nomod'"
    result.stdout.fnmatch_lines(["SKIPPED ?1? test_checks.py:*: broken: " + literal(error)] * 2)
    result.stdout.fnmatch_lines(
        ["*PytestConfigWarning: mode 'broken' will be skipped: " + literal(error)]
    )


def test_named_mode_that_cannot_load_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A typo in the one mode a vendor asked for must not pass as a run of skips."""
    result = run(pytester, "--ray-provisioner", "no.such.module:Nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines == [
        "ERROR: mode 'nope': cannot load no.such.module:Nope: ModuleNotFoundError: "
        "No module named 'no'",
        "",
    ]


def test_named_entry_point_that_cannot_load_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_vendor_dist(pytester, monkeypatch, "broken = nomod:Nope")
    result = run_subprocess(pytester, "--ray-modes", "broken")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: mode 'broken': "
            + literal("cannot load nomod:Nope: ModuleNotFoundError: No module named 'nomod'")
        ]
    )


def test_named_mode_that_cannot_be_constructed_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        badinit="""
        from fakemod import FakeProvisioner

        class BadInitProvisioner(FakeProvisioner):
            def __init__(self):
                raise RuntimeError("needs a licence file")
        """
    )
    result = run(pytester, "--ray-provisioner", "bad=badinit:BadInitProvisioner")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: mode 'bad': cannot construct badinit:BadInitProvisioner: "
            "RuntimeError: needs a licence file"
        ]
    )
    assert events(pytester) == []


def test_vendor_entry_point_is_discovered_and_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_vendor_dist(pytester, monkeypatch, "vendor = vendormod:VendorProvisioner")
    result = run_subprocess(pytester, "--ray-modes", "vendor")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["ray-conformance: run *, modes vendor, reports *"])
    assert events(pytester, "provision", "teardown") == [
        ("provision", "vendor"),
        ("teardown", "vendor"),
    ]


def test_duplicate_entry_point_name_warns_with_both_sources(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_vendor_dist(pytester, monkeypatch, "local = vendormod:VendorProvisioner")
    # --co: which of the two wins depends on sys.path order; only the warning is the contract.
    result = run_subprocess(pytester, "--co", *modes("fake=FakeProvisioner"))
    assert result.ret == pytest.ExitCode.OK
    result.stdout.re_match_lines(
        [
            r".*PytestConfigWarning: mode 'local' is registered twice \("
            r"(?=.*vendormod:VendorProvisioner)(?=.*provisioners\.modes\.local:LocalProvisioner).*"
        ]
    )


DRIFTED = """
from fakemod import FakeProvisioner


class DriftedProvisioner(FakeProvisioner):
    def run_in_cluster(self, script):  # the contract's takes a timeout too
        return ""


class HalfKillProvisioner(FakeProvisioner):
    def kill_worker(self):  # SupportsKillNode, without replaces_lost_nodes
        return "10.0.0.2"
"""


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (
            "DriftedProvisioner",
            "run_in_cluster(script) where Provisioner declares run_in_cluster(script, timeout)",
        ),
        (
            "HalfKillProvisioner",
            "SupportsKillNode without replaces_lost_nodes (it has kill_worker)",
        ),
    ],
)
def test_mode_that_departs_from_its_contract_is_named_before_anything_runs(
    pytester: pytest.Pytester, name: str, says: str
) -> None:
    """A drifted signature or half an ability stops the mode when it loads, naming both sides,
    not as a TypeError in a check or an ability the suites silently never see."""
    pytester.makepyfile(drifted=DRIFTED)
    result = run(pytester, "--ray-provisioner", f"bad=drifted:{name}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: mode 'bad': drifted:{name} does not meet its contract: {says}"
    )
    assert events(pytester) == []


def test_every_built_in_mode_meets_its_contract() -> None:
    """What the 12 per-mode static checks used to show: each registered mode loads cleanly."""
    from provisioners.contract.registry import discover

    found, _ = discover()
    assert {name: mode.load().load_error for name, mode in found.items()} == {
        name: "" for name in found
    }


SPY_MODULE = """
from pathlib import Path

from fakemod import FakeProvisioner
from provisioners.contract.options import Option

Path(__file__).with_name("spy-imported").touch()


class SpyProvisioner(FakeProvisioner):
    OPTIONS = (Option.string("spy-zone", "The spy's zone"),)
"""

#: Writes which of the project's mode modules the run imported, as it ends.
MODULES_CONFTEST = """
import sys
from pathlib import Path

MODES = {"provisioners.modes.local", "provisioners.modes.docker", "provisioners.modes.aws"}


def pytest_unconfigure(config):
    Path(__file__).with_name("modules.txt").write_text(" ".join(sorted(MODES & set(sys.modules))))
"""


@pytest.mark.parametrize(
    ("args", "imported", "modules"),
    [
        (("--ray-modes", "vendor"), False, ""),
        (("--ray-modes", "local", "--co"), False, "provisioners.modes.local"),
        (("--ray-modes", "spy"), True, ""),
        # A flag no imported mode declares: every mode is imported so it means what it did.
        (("--ray-modes", "vendor", "--ray-spy-zone=eu"), True, "*provisioners.modes.aws*"),
        (
            ("--help",),
            True,
            "*provisioners.modes.aws*provisioners.modes.docker*provisioners.modes.local*",
        ),
    ],
    ids=["another mode", "a built-in", "selected", "its flag given", "help"],
)
def test_a_run_imports_only_the_modes_it_selects(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    imported: bool,
    modules: str,
) -> None:
    """The registry's promise: a mode's module is imported when it is selected or listed."""
    pytester.makepyfile(spymod=SPY_MODULE)
    pytester.makeconftest(MODULES_CONFTEST)
    make_vendor_dist(
        pytester,
        monkeypatch,
        "vendor = vendormod:VendorProvisioner\nspy = spymod:SpyProvisioner\nbroken = nomod:Nope",
    )
    result = run_subprocess(pytester, *args)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert (pytester.path / "spy-imported").exists() == imported
    assert fnmatch.fnmatch((pytester.path / "modules.txt").read_text(), modules)
    if "--help" in args:
        result.stdout.fnmatch_lines(["*--ray-spy-zone=*The spy's zone*"])
    elif not imported:
        # Never imported, so never a warning about the broken one either.
        assert "broken" not in result.stdout.str()


def test_an_ini_setting_of_an_unselected_mode_still_means_what_it_did(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``ray_*`` key in the config file that no selected mode declares imports every mode, so
    the key stays known (no "unknown config option") as it was before modes loaded lazily."""
    pytester.makepyfile(spymod=SPY_MODULE)
    pytester.makeini("[pytest]\nray_spy_zone = eu\n")
    make_vendor_dist(
        pytester,
        monkeypatch,
        "vendor = vendormod:VendorProvisioner\nspy = spymod:SpyProvisioner",
    )
    result = run_subprocess(pytester, "--ray-modes", "vendor", "--strict-config", "-W", "error")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    assert (pytester.path / "spy-imported").exists()
