"""Finding modes: entry points (built-in and vendor), skips with a reason, broken entries."""

from __future__ import annotations

import pytest
from harness_fakes import CHECKS, events, literal, modes, run, run_subprocess, write_fakes

VENDOR_MODULE = """
from fakemod import FakeProvisioner


class VendorProvisioner(FakeProvisioner):
    pass
"""


def make_vendor_dist(pytester: pytest.Pytester, entry_points: str) -> None:
    """An installed-looking ``vendorpkg`` distribution registering ``entry_points``."""
    dist = pytester.mkdir("vendorpkg-0.1.dist-info")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vendorpkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[ray_conformance.provisioners]\n{entry_points}\n")
    pytester.makepyfile(vendormod=VENDOR_MODULE)


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(test_checks=CHECKS)


def test_missing_prerequisites_skip_every_test_with_the_reason(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, "-rs", *modes("fake=UnreadyProvisioner"))
    result.assert_outcomes(skipped=2)
    # Skips from a fixture are reported at each test's line, so one summary line per test.
    reason = "fake: the `frob` binary is not on PATH"
    result.stdout.fnmatch_lines([f"SKIPPED ?1? test_checks.py:*: {reason}"] * 2)
    assert events(pytester) == []  # neither provision nor teardown


def test_broken_provisioner_skips_its_mode_and_warns(pytester: pytest.Pytester) -> None:
    result = run(pytester, "-rs", "--ray-provisioner", "broken=nomod:Nope")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=2)
    error = "cannot load nomod:Nope: ModuleNotFoundError: No module named 'nomod'"
    result.stdout.fnmatch_lines(["SKIPPED ?1? test_checks.py:*: broken: " + literal(error)] * 2)
    result.stdout.fnmatch_lines(
        ["*PytestConfigWarning: mode 'broken' will be skipped: " + literal(error)]
    )


def test_vendor_entry_point_is_discovered_and_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_vendor_dist(pytester, "vendor = vendormod:VendorProvisioner")
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
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
    make_vendor_dist(pytester, "local = vendormod:VendorProvisioner")
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    # --co: which of the two wins depends on sys.path order; only the warning is the contract.
    result = run_subprocess(pytester, "--co", *modes("fake=FakeProvisioner"))
    assert result.ret == pytest.ExitCode.OK
    result.stdout.re_match_lines(
        [
            r".*PytestConfigWarning: mode 'local' is registered twice \("
            r"(?=.*vendormod:VendorProvisioner)(?=.*provisioners\.local:LocalProvisioner).*"
        ]
    )
