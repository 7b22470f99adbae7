"""Certification runs (``--ray-certify``) on fake modes; a failed check and the dashboard picture in the report."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from harness_fakes import LEAK_SUITE, events, modes, run, write_fakes

from fixtures.picture import chromium
from reports.bundle import main
from reports.certify import PROFILE, PROFILE_MARKER, TARGET_FIELDS, policy

REPO = Path(__file__).resolve().parents[1]

TARGET = {
    "vendor": "Example Corp",
    "name": "Example Ray Service",
    "version": "1.2",
    "website_url": "https://example.invalid/ray",
    "documentation_url": "https://example.invalid/ray/docs",
    "type": "hosted platform",
    "description": "Ray clusters on Example Corp's machines.",
    "contact_email_address": "ray-team@example.invalid",
    "mode": "fake",
    "ray_version": "2.60.0",
    "kuberay_version": "none",
    "platform_version": "example 7",
}

# The profile's checks by name, as inner tests on the fake cluster; one of them runs a command
# through the runner, so the bundle has a command log and a tool to report.
PROFILE_CHECKS = "import pytest\nfrom provisioners.util.runner import run\n\n" + "\n".join(
    f"@pytest.mark.{PROFILE_MARKER}\ndef {name}(ray_cluster):\n"
    + ('    run(["echo", "certify-me"], 10)\n' if i == 0 else "    pass\n")
    for i, name in enumerate(PROFILE)
)
OTHER_CHECK = """
def test_not_in_the_profile(ray_cluster):
    pass
"""


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)


def target(pytester: pytest.Pytester, **changes: object) -> Path:
    fields = {**TARGET, **changes}
    lines = [f"{k}: {json.dumps(v)}" for k, v in fields.items() if v is not None]
    return pytester.makefile(".yaml", target="\n".join(lines))


def certify(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Path]:
    report_dir = pytester.path / "out" / "run"
    result = run(
        pytester,
        *modes("fake=FakeProvisioner"),
        "--ray-run-id",
        "c1",
        "--ray-report-dir",
        str(report_dir),
        *args,
    )
    return result, report_dir


@pytest.mark.parametrize("field", TARGET_FIELDS)
def test_incomplete_target_is_a_usage_error_naming_the_field(
    pytester: pytest.Pytester, field: str
) -> None:
    pytester.makepyfile(test_profile=PROFILE_CHECKS)
    result, _ = certify(pytester, "--ray-certify", str(target(pytester, **{field: None})))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--ray-certify *target.yaml: field '{field}' is missing*"])
    assert events(pytester, "provision") == []


def test_target_for_another_mode_than_selected_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_profile=PROFILE_CHECKS)
    result, _ = certify(pytester, "--ray-certify", str(target(pytester)), "--ray-modes", "local")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*target.yaml's mode is 'fake' but --ray-modes selects local*"])


def test_certification_run_writes_one_archive_that_verifies_and_certifies(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_profile=PROFILE_CHECKS, test_other=OTHER_CHECK)
    result, report_dir = certify(pytester, "--ray-certify", str(target(pytester)))
    result.assert_outcomes(passed=len(PROFILE), deselected=1)
    archive = report_dir.parent / "ray-conformance-fake-c1.tar.gz"
    result.stdout.fnmatch_lines(
        [f"ray-conformance certification archive: {archive}", "*: the run certifies"]
    )
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    top = "ray-conformance-fake-c1"
    for member in (
        "target.yaml",
        "results.json",
        "junit.xml",
        "report.html",
        "manifest.json",
        "modes/fake.json",
        "certification/tools.json",
        "certification/commands.log",
    ):
        assert f"{top}/{member}" in names
    capsys.readouterr()  # the inner run's own output
    assert main(["verify", str(archive), "--certify"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[-1] == f"{archive}: OK (certified: {len(policy().rules)}/{len(policy().rules)} rules)"
    )
    assert [line.split(":")[0] for line in out[:-1]] == [f"PASS {r.id}" for r in policy().rules]
    assert main(["summary", str(archive)]) == 0
    assert f"mode fake: torn-down; {len(PROFILE)} total, {len(PROFILE)} passed" in (
        capsys.readouterr().out
    )

    assert "echo certify-me" in (report_dir / "certification/commands.log").read_text()
    tools = json.loads((report_dir / "certification/tools.json").read_text())
    assert {"python", "ray (installed)"} <= set(tools)
    assert "docker" not in tools  # the fake mode never ran docker
    record = json.loads((report_dir / "modes/fake.json").read_text())
    assert [i["name"] for i in record["inventory_before"]] == ["fake-head"]
    assert record["inventory_after"] == []


def test_a_skipped_or_missing_profile_check_fails_certification(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    skipped = PROFILE_CHECKS.replace(
        f"def {PROFILE[1]}(ray_cluster):\n    pass",
        f"def {PROFILE[1]}(ray_cluster):\n    pytest.skip('no ability')",
    )
    # The last profile check is left out, as if the vendor's checkout lacked it.
    skipped = skipped[: skipped.index(f"@pytest.mark.{PROFILE_MARKER}\ndef {PROFILE[-1]}")]
    pytester.makepyfile(test_profile=skipped)
    result, report_dir = certify(pytester, "--ray-certify", str(target(pytester)))
    result.assert_outcomes(passed=len(PROFILE) - 2, failed=1)
    result.stdout.fnmatch_lines(
        ["*certification: a profile check may not be skipped (no ability)*"]
    )
    archive = report_dir.parent / "ray-conformance-fake-c1.tar.gz"
    capsys.readouterr()
    assert main(["verify", str(archive)]) == 0  # intact ...
    assert main(["verify", str(archive), "--certify"]) == 1  # ... but not certified
    out = capsys.readouterr().out
    assert f"::{PROFILE[1]}[fake]: failed (certification: a profile check may not be skipped" in out
    assert f"  {PROFILE[-1]} [fake]: did not run" in out
    assert "does not certify (2 of" in out
    assert "rules failed: profile-ran, profile-passed)" in out


def test_more_known_flake_retries_than_allowed_fail_a_profile_check(
    pytester: pytest.Pytester,
) -> None:
    flaky = PROFILE_CHECKS.replace(
        f"def {PROFILE[2]}(ray_cluster):\n    pass",
        f"def {PROFILE[2]}(ray_cluster, request):\n"
        "    request.node.user_properties.append(\n"
        "        ('known_flake_retries', ['ray-project/ray#63202'] * 2)\n"
        "    )",
    )
    pytester.makepyfile(test_profile=flaky)
    result, _ = certify(pytester, "--ray-certify", str(target(pytester)))
    result.assert_outcomes(passed=len(PROFILE) - 1, failed=1)
    result.stdout.fnmatch_lines(
        ["*certification: 2 known-flake retries (ray-project/ray#63202, *more than the 1*"]
    )


def test_failed_check_cell_shows_the_failure_and_links_to_diagnostics(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_fails="""
        def test_bad(ray_cluster):
            assert ray_cluster.expected_nodes == 3, "node fake-w1 never ran work\\nseen: head only"

        def test_good(ray_cluster):
            pass
        """
    )
    report_dir = pytester.path / "out"
    result = run(pytester, *modes("fake=FakeProvisioner"), "--ray-report-dir", str(report_dir))
    result.assert_outcomes(passed=1, failed=1)
    assert events(pytester, "diagnostics") == [("diagnostics", "fake")]  # once for the mode
    html = (report_dir / "report.html").read_text()
    cell = re.search(
        r'<td class="o-failed" data-check="test_bad" data-mode="fake".*?</td>', html, re.S
    )
    assert cell is not None
    shown = re.search(r'<pre class="why">(.*?)</pre>', cell.group(0), re.S)
    assert shown is not None
    assert shown.group(1).splitlines()[:2] == [
        "AssertionError: node fake-w1 never ran work",
        "  seen: head only",
    ]
    href = re.search(r'<a class="diag" href="([^"]+)">diagnostics</a>', cell.group(0))
    assert href is not None
    assert href.group(1) == "diagnostics/fake"
    assert (report_dir / href.group(1)).is_dir()  # following the link finds the mode's logs
    good = re.search(r'<td class="o-passed" data-check="test_good".*?</td>', html, re.S)
    assert good is not None
    assert "diagnostics" not in good.group(0)


def test_profile_is_exactly_the_marked_suite_checks() -> None:
    marked = []
    for path in sorted((REPO / "suites").glob("test_*.py")):
        module = importlib.import_module(f"suites.{path.stem}")
        module_marks = getattr(module, "pytestmark", [])
        module_marks = module_marks if isinstance(module_marks, list) else [module_marks]
        for name, fn in vars(module).items():
            if not name.startswith("test_") or not callable(fn):
                continue
            marks = [*module_marks, *getattr(fn, "pytestmark", [])]
            if any(m.name == PROFILE_MARKER for m in marks):
                marked.append(name)
    assert sorted(marked) == sorted(PROFILE)


FAKE_CHROMIUM = """#!/bin/sh
# Stands in for Debian's chromium: records its URL and writes a PNG where it is told.
for arg in "$@"; do
  case "$arg" in
    --screenshot=*) out="${arg#--screenshot=}" ;;
    http*) echo "$arg" > "${0%/*}/url" ;;
  esac
done
printf '\\211PNG\\r\\n\\032\\nfake' > "$out"
"""


def test_dashboard_screenshot_is_shown_in_the_report_or_says_why_not(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_a="def test_one(ray_cluster):\n    pass\n")
    bin_dir = pytester.mkdir("bin")
    monkeypatch.setenv("PATH", str(bin_dir))  # no chromium here yet, whatever this machine has
    args = [*modes("fake=FakeProvisioner"), "--ray-screenshot"]
    run(pytester, *args, "--ray-report-dir", str(pytester.path / "without")).assert_outcomes(
        passed=1
    )
    html = (pytester.path / "without" / "report.html").read_text()
    assert "no screenshot: chromium is not installed (apt-get install chromium)" in html

    (bin_dir / "chromium").write_text(FAKE_CHROMIUM)
    (bin_dir / "chromium").chmod(0o755)
    report_dir = pytester.path / "with"
    run(pytester, *args, "--ray-report-dir", str(report_dir)).assert_outcomes(passed=1)
    assert (bin_dir / "url").read_text() == "http://127.0.0.1:8265/#/cluster\n"
    assert (report_dir / "screenshots" / "fake.png").read_bytes().startswith(b"\x89PNG")
    html = (report_dir / "report.html").read_text()
    assert '<img class="shot" src="screenshots/fake.png"' in html


def test_screenshot_and_diagnostics_come_before_the_teardown_check(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The teardown check tears the cluster down before the session ends: the picture (and a
    # failed mode's diagnostics) must be taken while the cluster is still up.
    pytester.makepyfile(
        test_a="def test_one(ray_cluster):\n    assert False, 'on purpose'\n",
        test_leak=LEAK_SUITE.read_text(),
    )
    bin_dir = pytester.mkdir("bin")
    (bin_dir / "chromium").write_text(FAKE_CHROMIUM)
    (bin_dir / "chromium").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    report_dir = pytester.path / "out"
    result = run(
        pytester,
        *modes("fake=FakeProvisioner"),
        "--ray-screenshot",
        f"--ray-report-dir={report_dir}",
    )
    result.assert_outcomes(passed=2, failed=1)
    kinds = [e for e, _ in events(pytester)]
    assert kinds.index("diagnostics") < kinds.index("teardown"), kinds
    assert (report_dir / "screenshots" / "fake.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(
    chromium() is None, reason="chromium is not installed (apt-get install chromium)"
)
@pytest.mark.timeout(600)
def test_local_run_saves_a_real_picture_of_the_dashboard(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(test_a="def test_one(ray_cluster):\n    pass\n")
    report_dir = pytester.path / "out"
    result = run(
        pytester, "--ray-modes=local", "--ray-screenshot", f"--ray-report-dir={report_dir}"
    )
    result.assert_outcomes(passed=1)
    shot = (report_dir / "screenshots" / "local.png").read_bytes()
    assert shot.startswith(b"\x89PNG")
    # Not a blank page: the dashboard's picture holds far more than a blank render of its size.
    blank = tmp_path / "blank.png"
    browser = chromium()
    assert browser is not None
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,800",
            f"--screenshot={blank}",
            "about:blank",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert len(shot) > 5 * len(blank.read_bytes()), (len(shot), len(blank.read_bytes()))


def test_a_target_claiming_another_ray_version_does_not_certify(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_profile=PROFILE_CHECKS)
    result, report_dir = certify(
        pytester, "--ray-certify", str(target(pytester, ray_version="2.9.0"))
    )
    result.assert_outcomes(passed=len(PROFILE))
    capsys.readouterr()
    assert main(["verify", str(report_dir), "--certify"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "  target.yaml: ray_version '2.9.0', but the cluster ran Ray 2.60.0" in out
    assert "  target.yaml: ray_version '2.9.0' is not one of 2.60.0, 2.59.0" in out
