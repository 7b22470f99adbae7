"""Each certification rule (reports/rules.yaml) fails on a bundle that breaks it, and only it.

A real certification bundle comes from a pytester run of the profile on a fake mode; a tamper
then breaks one rule (rewriting the manifest, so the checksums still hold, except for the
checksums rule itself) and ``verify --certify`` must print that rule FAIL and every other PASS.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness_fakes import write_fakes
from test_certify import PROFILE_CHECKS, certify, target

from reports.bundle import main
from reports.certify import PROFILE, TOOLS_FILE, policy
from reports.manifest import write_manifest
from reports.rules import CHECKS, junit_key


def edit_json(path: Path, change: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def edit_yaml(path: Path, **fields: object) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(fields)
    path.write_text(yaml.safe_dump(data))


def edit_results(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    edit_json(bundle / "results.json", change)


def set_cluster_ray(bundle: Path, version: str) -> None:
    def handle(record: dict[str, Any]) -> None:
        record["handle"]["ray_version"] = version

    edit_results(bundle, lambda d: handle(d["modes"][0]))
    edit_json(bundle / "modes" / "fake.json", handle)


def junit_case(bundle: Path, check: str) -> tuple[Any, ET.Element]:
    tree = ET.parse(bundle / "junit.xml")
    name = f"{check}[fake]"
    case = next(c for c in tree.iter("testcase") if c.get("name") == name)
    return tree, case


def skip_a_profile_check(bundle: Path) -> None:
    # Consistent everywhere (results and JUnit): only the profile's own rule sees it.
    def skipped(data: dict[str, Any]) -> None:
        r = next(r for r in data["results"] if r["check"] == PROFILE[2])
        r["outcome"], r["message"] = "skipped", "no ability"

    edit_results(bundle, skipped)
    tree, case = junit_case(bundle, PROFILE[2])
    ET.SubElement(case, "skipped", message="no ability")
    tree.write(bundle / "junit.xml")


def drop_a_profile_check(bundle: Path) -> None:
    edit_results(
        bundle,
        lambda d: d.update(results=[r for r in d["results"] if r["check"] != PROFILE[-1]]),
    )
    tree, case = junit_case(bundle, PROFILE[-1])
    for suite in tree.iter("testsuite"):
        if case in list(suite):
            suite.remove(case)
    tree.write(bundle / "junit.xml")


def fail_in_junit_only(bundle: Path) -> None:
    tree, case = junit_case(bundle, PROFILE[0])
    ET.SubElement(case, "failure", message="assert 1 == 2")
    tree.write(bundle / "junit.xml")


def edit_html(path: Path) -> None:
    path.write_text(path.read_text().replace("</body>", "<p>edited after the run</p></body>"))


def claim_an_unused_tool(bundle: Path) -> None:
    edit_json(bundle / TOOLS_FILE, lambda t: t.update(kubectl="Client Version: v1.34.4"))


def unsupported_ray_everywhere(bundle: Path) -> None:
    # A consistent run on a Ray outside the supported releases: client, cluster, product file.
    edit_yaml(bundle / "target.yaml", ray_version="2.58.1")
    set_cluster_ray(bundle, "2.58.1")
    edit_results(bundle, lambda d: d["environment"].update(ray="2.58.1"))
    edit_json(bundle / TOOLS_FILE, lambda t: t.update({"ray (installed)": "2.58.1"}))


#: One way to break each rule: rule id -> (tamper, a line verify must print under its FAIL).
BREAKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "checksums": (
        lambda b: edit_html(b / "report.html"),
        "  modified: report.html",
    ),
    "product-file": (
        lambda b: edit_yaml(b / "target.yaml", contact_email_address="ray-team at example"),
        "  target.yaml: field 'contact_email_address' must be an email address (name@domain), "
        "not 'ray-team at example'",
    ),
    "ray-supported": (
        unsupported_ray_everywhere,
        "  target.yaml: ray_version '2.58.1' is not one of 2.60.0, 2.59.0",
    ),
    "ray-ran": (
        lambda b: set_cluster_ray(b, "2.59.0"),
        "  target.yaml: ray_version '2.60.0', but the cluster ran Ray 2.59.0",
    ),
    "profile-ran": (drop_a_profile_check, f"  {PROFILE[-1]} [fake]: did not run"),
    "profile-passed": (
        skip_a_profile_check,
        f"  test_profile.py::{PROFILE[2]}[fake]: skipped (no ability)",
    ),
    "results-junit": (
        fail_in_junit_only,
        f"  test_profile.py::{PROFILE[0]}[fake]: passed in results.json, failed in junit.xml",
    ),
    "results-logs": (
        claim_an_unused_tool,
        f"  {TOOLS_FILE}: names kubectl, which certification/commands.log never ran",
    ),
}


@pytest.fixture
def bundle(pytester: pytest.Pytester) -> Path:
    """A real certification bundle: the profile run on the fake mode, certified as made."""
    write_fakes(pytester)
    pytester.makepyfile(test_profile=PROFILE_CHECKS)
    result, report_dir = certify(pytester, "--ray-certify", str(target(pytester)))
    result.assert_outcomes(passed=len(PROFILE))
    result.stdout.fnmatch_lines(["*: the run certifies"])
    return report_dir


def verify(bundle: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["verify", str(bundle), "--certify"])
    return code, capsys.readouterr().out.splitlines()


def test_every_written_rule_has_code_and_a_test_that_breaks_it() -> None:
    ids = [r.id for r in policy().rules]
    assert ids == list(CHECKS), "rules.yaml and reports/rules.py CHECKS differ"
    assert sorted(BREAKS) == sorted(ids)
    assert all(r.text.endswith(".") and "{" not in r.text for r in policy().rules)


def test_an_untouched_bundle_passes_every_rule(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify(bundle, capsys)
    assert code == 0, out
    assert out == [
        *(f"PASS {r.id}: {r.text}" for r in policy().rules),
        f"{bundle}: OK (certified: {len(policy().rules)}/{len(policy().rules)} rules)",
    ]


@pytest.mark.parametrize("rule", list(BREAKS))
def test_breaking_one_rule_fails_that_rule_alone(
    bundle: Path, capsys: pytest.CaptureFixture[str], rule: str
) -> None:
    tamper, expected = BREAKS[rule]
    tamper(bundle)
    if rule != "checksums":
        write_manifest(bundle, "c1")  # the tamper is the vendor's own, sealed as if by the run
    code, out = verify(bundle, capsys)
    verdicts = {line.split(":")[0] for line in out if line.startswith(("PASS ", "FAIL "))}
    assert verdicts == {f"{'FAIL' if r.id == rule else 'PASS'} {r.id}" for r in policy().rules}, (
        "\n".join(out)
    )
    assert code == 1
    assert expected in out, "\n".join(out)
    assert (
        out[-1] == f"{bundle}: does not certify (1 of {len(policy().rules)} rules failed: {rule})"
    )


def test_a_rule_whose_file_is_gone_fails_saying_so(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (bundle / TOOLS_FILE).unlink()
    write_manifest(bundle, "c1")
    code, out = verify(bundle, capsys)
    assert code == 1
    assert f"  cannot check: {TOOLS_FILE}: unreadable" in "\n".join(out)


def test_junit_keys_follow_pytests_writer() -> None:
    assert junit_key("suites/test_spread.py::test_a[local]") == (
        "suites.test_spread",
        "test_a[local]",
    )
    assert junit_key("t.py::Cls::test_b[x-1]") == ("t.Cls", "test_b[x-1]")


def test_a_certified_archive_is_laid_out_as_a_cncf_like_submission(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = bundle.parent / "ray-conformance-fake-c1.tar.gz"
    capsys.readouterr()
    assert main(["submission", str(archive), str(tmp_path / "subs")]) == 0
    dest = tmp_path / "subs" / "v2.60" / "example-corp-example-ray-service"
    assert capsys.readouterr().out.splitlines()[0] == f"submission of {archive.name}: {dest}"
    assert sorted(p.name for p in dest.iterdir()) == [
        "PRODUCT.yaml",
        "README.md",
        "junit.xml",
        "progress.log",
        archive.name,
    ]
    assert (dest / "PRODUCT.yaml").read_bytes() == (bundle / "target.yaml").read_bytes()
    readme = (dest / "README.md").read_text()
    assert readme.startswith("# Example Corp Example Ray Service 1.2\n")
    assert f"python -m reports verify {archive.name} --certify" in readme
    assert all(f"- PASS `{r.id}`" in readme for r in policy().rules)
    # The archive inside the submission is what a reviewer verifies: it still certifies.
    assert main(["verify", str(dest / archive.name), "--certify"]) == 0


def test_an_archive_that_does_not_certify_is_not_laid_out(
    pytester: pytest.Pytester, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fakes(pytester)
    pytester.makepyfile(test_profile=PROFILE_CHECKS)
    _, report_dir = certify(pytester, "--ray-certify", str(target(pytester, ray_version="2.9.0")))
    archive = report_dir.parent / "ray-conformance-fake-c1.tar.gz"
    capsys.readouterr()
    assert main(["submission", str(archive), str(tmp_path / "subs")]) == 1
    assert "does not certify (rules failed: ray-supported, ray-ran)" in capsys.readouterr().err
    assert not (tmp_path / "subs").exists()
