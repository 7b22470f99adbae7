"""The report writer, driven by a real pytest run in pytester; and the bundle CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from reports.bundle import main, render_text, write_report
from reports.manifest import write_manifest
from reports.model import Result, Results, load_results

REPO = Path(__file__).resolve().parents[1]

# Stands in for the lead's plugin: registers the writer on the controller only, points junit.xml
# into the report dir, tags items with ray_mode/ray_check and writes the ModeRecords.
CONFTEST = """
import pytest
from pathlib import Path

from reports.model import ModeRecord, RunContext
from reports.writer import ResultsWriter

MODES = ("local", "docker")
REPORT_DIR = Path({report_dir!r})


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        return
    if not config.option.xmlpath:
        config.option.xmlpath = str(REPORT_DIR / "junit.xml")
    ModeRecord(
        "local", "torn-down", provision_seconds=1.5, teardown_seconds=0.25,
        handle={{"ray_version": "2.60.0", "python_version": "3.11.9", "expected_nodes": 3}},
        diagnostics=str(REPORT_DIR / "diagnostics" / "local.txt"),
    ).save(REPORT_DIR)
    # The record is the mode's: its reason is not named (the harness's SKIP message is).
    ModeRecord("docker", "skipped", reason="no engine answers on /var/run/docker.sock").save(
        REPORT_DIR
    )
    (REPORT_DIR / "diagnostics").mkdir(exist_ok=True)
    (REPORT_DIR / "diagnostics" / "local.txt").write_text("ray status output")
    ctx = RunContext("run-1", REPORT_DIR, MODES)
    config.pluginmanager.register(ResultsWriter(ctx), "ray-conformance-results")


def pytest_generate_tests(metafunc):
    if "mode" in metafunc.fixturenames:
        metafunc.parametrize("mode", MODES, indirect=True)


@pytest.fixture
def mode(request):
    if request.param == "docker":
        pytest.skip("docker: no engine answers on /var/run/docker.sock")
    return request.param


def pytest_collection_modifyitems(items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec and "mode" in callspec.params:
            item.user_properties.append(("ray_mode", callspec.params["mode"]))
            item.user_properties.append(("ray_check", item.originalname))
"""

CHECKS = """
import pytest

def test_ok(mode, request):
    request.node.user_properties.append(("spread_tally", {"n1": 3, "n2": 0}))

def test_bad(mode):
    assert mode == "nope", f"node n1 never ran work on {mode} <b>&"

@pytest.fixture
def leaky():
    yield
    raise RuntimeError("service svc-1 left behind")

def test_leaky(mode, leaky):
    pass

@pytest.mark.xfail(reason="known gap", strict=True)
def test_gap(mode):
    assert False

def test_harness_only():
    pass
"""

EXPECTED = {
    ("test_ok", "local"): "passed",
    ("test_bad", "local"): "failed",
    ("test_leaky", "local"): "error",
    ("test_gap", "local"): "xfailed",
    ("test_ok", "docker"): "skipped",
    ("test_bad", "docker"): "skipped",
    ("test_leaky", "docker"): "skipped",
    ("test_gap", "docker"): "skipped",
}


def run_suite(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Path]:
    report_dir = pytester.path / "report"
    report_dir.mkdir()
    pytester.makeconftest(CONFTEST.format(report_dir=str(report_dir)))
    pytester.makepyfile(test_checks=CHECKS)
    # The conftest above plays the plugin's part: the installed one stays out.
    return pytester.runpytest("-p", "no:fixtures.plugin", *args), report_dir


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def outcomes(doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(r["check"], r["mode"]): r["outcome"] for r in doc["results"]}


def test_writer_records_one_outcome_per_check_and_mode(pytester: pytest.Pytester) -> None:
    result, report_dir = run_suite(pytester)
    result.assert_outcomes(passed=3, failed=1, errors=1, skipped=4, xfailed=1)
    doc = read(report_dir / "results.json")
    assert doc["schema"] == "ray-conformance/results/v1"
    assert doc["run_id"] == "run-1"
    assert doc["exit_status"] == 1
    assert doc["started"] <= doc["finished"]
    assert doc["environment"]["ray"] == "2.60.0"
    assert outcomes(doc) == EXPECTED  # the harness-only test is left out
    by_key = {(r["check"], r["mode"]): r for r in doc["results"]}
    assert by_key["test_ok", "docker"]["message"] == (
        "docker: no engine answers on /var/run/docker.sock"
    )
    assert "never ran work on local" in by_key["test_bad", "local"]["message"]
    assert by_key["test_leaky", "local"]["message"].startswith("teardown failed: RuntimeError")
    assert by_key["test_gap", "local"]["message"] == "known gap"
    # What a check records (the spread counter's tallies) travels with its result.
    assert by_key["test_ok", "local"]["properties"] == {"spread_tally": {"n1": 3, "n2": 0}}
    assert by_key["test_ok", "docker"]["properties"] == {}
    assert by_key["test_ok", "local"]["nodeid"] == "test_checks.py::test_ok[local]"
    assert [m["mode"] for m in doc["modes"]] == ["local", "docker"]
    assert doc["modes"][0]["handle"]["expected_nodes"] == 3
    assert doc["modes"][1]["status"] == "skipped"
    assert doc["modes"][0]["diagnostics"] == "diagnostics/local.txt"  # relative: bundles move
    # A skipped mode's reason is said once, on its verdict line, not once per check.
    shown = render_text(load_results(report_dir)).splitlines()
    assert "docker: NOT RUN — no engine answers on /var/run/docker.sock" in shown
    assert not [line for line in shown if "[docker]" in line]
    # The run ends on each mode's verdict and where the report is.
    result.stdout.fnmatch_lines(
        [
            "ray-conformance local: NOT CONFORMANT — 2 failed: Bad; Leaky",
            "ray-conformance docker: NOT RUN — no engine answers on /var/run/docker.sock",
            f"ray-conformance report: {report_dir}/report.html (results: {report_dir}/results.json)",
        ]
    )


def test_html_shows_the_matrix_escaped(pytester: pytest.Pytester) -> None:
    _, report_dir = run_suite(pytester)
    page = (report_dir / "report.html").read_text()
    for (check, mode), outcome in EXPECTED.items():
        if mode == "local":  # a mode that did not run has its banner and no column
            assert f'data-check="{check}" data-mode="{mode}" data-outcome="{outcome}"' in page
    assert 'data-mode="docker"' not in page.split('<table class="matrix">')[1]
    assert (
        '<div class="verdict v-not-run" data-mode="docker" data-verdict="NOT RUN">'
        '<span class="mode">docker:</span><strong>NOT RUN</strong> — no engine answers on'
    ) in page
    # The verdict comes first: before the matrix, the details and the run's metadata.
    assert page.index('data-verdict="NOT CONFORMANT"') < page.index('<table class="matrix">')
    assert "Ray 2.60.0, Python 3.11.9" in page  # the provision row: versions, time
    assert '<span class="dur">1.50s</span>' in page
    assert "local: 1 passed, 1 failed, 1 error, 1 xfailed" in page  # local's totals
    assert "&lt;b&gt;&amp;" in page
    assert "<b>&" not in page
    assert "test_harness_only" not in page
    assert 'href="diagnostics/local.txt"' in page


def test_writer_records_collection_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken="import no_such_module_here")
    _, report_dir = run_suite(pytester, "--continue-on-collection-errors")
    doc = read(report_dir / "results.json")
    assert [e["nodeid"] for e in doc["collection_errors"]] == ["test_broken.py"]
    assert "no_such_module_here" in doc["collection_errors"][0]["message"]
    assert outcomes(doc) == EXPECTED


def test_manifest_lists_every_file_including_junit(pytester: pytest.Pytester) -> None:
    _, report_dir = run_suite(pytester)
    listed = [f["path"] for f in read(report_dir / "manifest.json")["files"]]
    assert listed == [
        "diagnostics/local.txt",
        "junit.xml",
        "modes/docker.json",
        "modes/local.json",
        "report.html",
        "results.json",
    ]
    # junit.xml is complete when hashed, not an empty placeholder.
    assert "</testsuites>" in (report_dir / "junit.xml").read_text()


def test_verify_accepts_the_bundle_and_names_every_tampered_file(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report_dir = run_suite(pytester)
    capsys.readouterr()
    assert main(["verify", str(report_dir)]) == 0
    assert capsys.readouterr().out == f"{report_dir}: OK\n"

    results = report_dir / "results.json"
    results.write_text(results.read_text().replace('"failed"', '"passed"'))
    (report_dir / "modes" / "docker.json").unlink()
    (report_dir / "extra.txt").write_text("x")
    assert main(["verify", str(report_dir)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[1:] == [
        "  missing: modes/docker.json",
        "  modified: results.json",
        "  extra: extra.txt",
    ]


def test_writer_under_xdist_matches_a_serial_run(pytester: pytest.Pytester) -> None:
    # One worker is enough: every report still crosses the execnet serialization.
    result, report_dir = run_suite(pytester, "-n", "1")
    result.assert_outcomes(passed=3, failed=1, errors=1, skipped=4, xfailed=1)
    doc = read(report_dir / "results.json")
    assert outcomes(doc) == EXPECTED
    # user_properties and skip tuples arrive as lists once serialized between processes.
    skip = next(r for r in doc["results"] if r["mode"] == "docker")
    assert skip["message"] == "docker: no engine answers on /var/run/docker.sock"
    assert main(["verify", str(report_dir)]) == 0


def make_bundle(
    path: Path,
    run_id: str,
    results: list[Result],
    modes: dict[str, str],
    ray: str = "2.60.0",
    records: dict[str, dict[str, Any]] | None = None,
) -> Path:
    doc = Results(
        run_id=run_id,
        started=f"2025-01-0{len(run_id)}T00:00:00+00:00",
        finished=f"2025-01-0{len(run_id)}T01:00:00+00:00",
        exit_status=0 if all(r.outcome == "passed" for r in results) else 1,
        environment={"python": "CPython 3.11.9", "ray": ray, "platform": run_id},
        modes=[{"mode": m, "status": s, **(records or {}).get(m, {})} for m, s in modes.items()],
        results=results,
    )
    write_report(path, doc)
    write_manifest(path, run_id)
    return path


def result(check: str, mode: str, outcome: str) -> Result:
    return Result(check, mode, outcome, 1.0, "", f"suites/test_x.py::{check}[{mode}]")


def shards(tmp_path: Path) -> tuple[Path, Path]:
    a = make_bundle(
        tmp_path / "a",
        "a",
        [result("test_ok", "local", "passed"), result("test_two", "local", "passed")],
        {"local": "torn-down", "docker": "pending"},
    )
    b = make_bundle(
        tmp_path / "bb",
        "bb",
        [result("test_ok", "docker", "passed"), result("test_ok", "local", "failed")],
        {"local": "pending", "docker": "torn-down"},
    )
    return a, b


def test_merge_combines_shards_and_last_wins_a_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = shards(tmp_path)
    out = tmp_path / "out"
    assert main(["merge", str(out), str(a), str(b)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "test_ok [local]" in err
    doc = read(out / "results.json")
    assert outcomes(doc) == {
        ("test_ok", "local"): "failed",
        ("test_two", "local"): "passed",
        ("test_ok", "docker"): "passed",
    }
    # A shard's "pending" placeholder does not replace another shard's real record.
    assert {m["mode"]: m["status"] for m in doc["modes"]} == {
        "local": "torn-down",
        "docker": "torn-down",
    }
    assert doc["run_id"] == "a+bb"
    assert doc["exit_status"] == 1
    assert (doc["started"], doc["finished"]) == (
        "2025-01-01T00:00:00+00:00",
        "2025-01-02T01:00:00+00:00",
    )
    assert doc["environment"]["ray"] == "2.60.0"
    assert doc["environment"]["platform"] == "mixed: a | bb"
    assert [s["run_id"] for s in doc["merged_from"]] == ["a", "bb"]
    assert (
        'data-check="test_ok" data-mode="docker" data-outcome="passed"'
        in (out / "report.html").read_text()
    )
    assert main(["verify", str(out)]) == 0


def test_merge_refuses_a_tampered_input_or_a_used_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = shards(tmp_path)
    assert main(["merge", str(a), str(b)]) == 2
    assert capsys.readouterr().err == f"error: {a}: exists and is not an empty directory\n"
    (b / "report.html").write_text("edited")
    assert main(["merge", str(tmp_path / "out"), str(a), str(b)]) == 2
    assert capsys.readouterr().err == f"error: {b}: does not verify (modified: report.html)\n"
    assert not (tmp_path / "out").exists()


def test_show_prints_verdicts_then_a_text_matrix_of_the_modes_run(tmp_path: Path) -> None:
    a, _ = shards(tmp_path)
    # Through the real entry point once, to cover `python -m reports`.
    proc = subprocess.run(
        [sys.executable, "-m", "reports", "show", str(a)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    lines = proc.stdout.splitlines()
    assert lines[2] == (
        "local: INCOMPLETE — 0/11 certification checks passed, 11 did not run or were skipped"
    )
    assert lines[4].split() == ["check", "local"]
    assert lines[5].split() == ["Ok", "PASS"]
    assert lines[7].split() == ["totals", "2/2", "pass"]
    # docker was listed but never run in this shard: it has no verdict and no column.
    assert "docker" not in proc.stdout


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: None, "no such directory"),
        (lambda d: d.mkdir(), "results.json: not found (is this a ray-conformance report dir?)"),
        (lambda d: (d.mkdir(), (d / "results.json").write_text("{")), "not valid JSON (line 1"),
        (
            lambda d: (d.mkdir(), (d / "results.json").write_text('{"schema": "v0"}')),
            "unsupported schema 'v0'",
        ),
    ],
    ids=["missing-dir", "not-a-bundle", "corrupt-json", "wrong-schema"],
)
def test_cli_unreadable_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: Any, expected: str
) -> None:
    d = tmp_path / "bundle"
    setup(d)
    assert main(["show", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert expected in err
    assert err.count("\n") == 1


def test_verify_rejects_paths_outside_the_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = shards(tmp_path)
    manifest = read(a / "manifest.json")
    manifest["files"].append({"path": "../a/results.json", "size": 1, "sha256": "0"})
    (a / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(a)]) == 1
    assert "  invalid path: '../a/results.json'" in capsys.readouterr().err.splitlines()


def test_summary_prints_each_mode_and_detail_lists_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(
        tmp_path / "s",
        "s",
        [
            result("test_ok", "local", "passed"),
            Result("test_bad", "local", "failed", 2.0, "node n1 never ran work\nmore", "t::bad"),
            Result("test_gap", "local", "skipped", 0.0, "no shm ability", "t::gap"),
        ],
        {"local": "torn-down"},
    )
    assert main(["summary", str(bundle)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "mode local: torn-down; 3 total, 1 passed, 1 failed, 1 skipped"
    )
    assert main(["summary", "--detail", str(bundle)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  FAIL  t::bad: node n1 never ran work" in lines
    assert "  SKIP  t::gap: no shm ability" in lines


def test_merge_and_verify_read_archives(tmp_path: Path) -> None:
    import tarfile

    a, b = shards(tmp_path)
    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(b, arcname="ray-conformance-docker-bb")
    assert main(["verify", str(archive)]) == 0
    assert main(["merge", str(tmp_path / "out"), str(a), str(archive)]) == 0
    doc = read(tmp_path / "out" / "results.json")
    assert outcomes(doc)[("test_ok", "docker")] == "passed"
    assert doc["merged_from"][1]["dir"] == str(archive)


def test_compare_flags_a_check_that_went_from_pass_to_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = shards(tmp_path)  # test_ok [local] passed in a, failed in bb
    assert main(["compare", str(a), str(b)]) == 1
    out, err = capsys.readouterr()
    assert out == "compared modes: local (only in the current run: docker)\n"
    assert err.splitlines()[1:] == [
        "  suites/test_x.py::test_ok[local] [local]: passed, now failed",
        "  suites/test_x.py::test_two[local] [local]: passed, now missing",
    ]
    assert main(["compare", str(b), str(a)]) == 0  # failed -> passed is progress
    # A mode absent tonight (its secrets gone) is not a regression of that mode.
    only_docker = make_bundle(
        tmp_path / "d", "d", [result("test_ok", "docker", "passed")], {"docker": "torn-down"}
    )
    assert main(["compare", str(b), str(only_docker)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "compared modes: docker (only in the previous run: local)",
        f"no regressions since {b}",
    ]


def test_compare_with_no_mode_in_common_fails_naming_both_sides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = make_bundle(tmp_path / "l", "l", [result("test_ok", "local", "passed")], {})
    docker = make_bundle(tmp_path / "d", "d", [result("test_ok", "docker", "passed")], {})
    assert main(["compare", str(local), str(docker)]) == 2
    assert capsys.readouterr().err == (
        "error: no mode in common: the previous run ran local, the current run ran docker\n"
    )


def test_gate_fails_on_a_check_that_passed_and_is_skipped_now(tmp_path: Path) -> None:
    # The nightly's gate, run exactly as the workflow runs it, on a pass -> skip pair.
    make_bundle(
        tmp_path / "previous",
        "p",
        [result("test_ok", "aws", "passed"), result("test_two", "aws", "passed")],
        {"aws": "torn-down"},
    )
    skipped = Result(
        "test_two", "aws", "skipped", 0.0, "aws: needs root", "suites/test_x.py::test_two[aws]"
    )
    make_bundle(
        tmp_path / "matrix",
        "m",
        [result("test_ok", "aws", "passed"), skipped],
        {"aws": "torn-down"},
    )
    workflow = (REPO / ".github" / "workflows" / "nightly.yml").read_text()
    command = re.search(r"(python -m reports compare previous matrix[^\n]*)", workflow)
    assert command is not None
    proc = subprocess.run(
        [sys.executable, *command.group(1).split()[1:]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1, proc
    assert proc.stdout == "compared modes: aws\n"
    assert proc.stderr.splitlines() == [
        "1 regression(s) since previous:",
        "  suites/test_x.py::test_two[aws] [aws]: passed, now skipped aws: needs root",
    ]


def test_gate_fails_on_a_mode_that_skipped_every_check_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    skip = Result("test_ok", "ibm", "skipped", 0.0, "ibm: needs root", "suites/test_x.py::ok[ibm]")
    previous = make_bundle(tmp_path / "p", "p", [skip, result("test_ok", "local", "passed")], {})
    current = make_bundle(
        tmp_path / "c",
        "c",
        [skip, result("test_ok", "local", "passed")],
        {"ibm": "skipped", "local": "torn-down"},
    )
    # Skipped before too: still a regression, or a job that never runs stays green forever.
    assert main(["compare", str(previous), str(current)]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  mode ibm: all 1 checks skipped (ibm: needs root)"
    ]
    # A mode that skips by design (kind-rayup on Ray >= 2.2) is named to be let through.
    assert main(["compare", str(previous), str(current), "--allow-skipped", "ibm"]) == 0


def test_merge_keeps_one_junit_file_and_the_diagnostics_the_report_links(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    _, report_dir = run_suite(pytester)
    other = make_bundle(
        tmp_path / "other", "other", [result("test_ok", "vm", "passed")], {"vm": "torn-down"}
    )
    (other / "junit.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="1">'
        '<testcase classname="suites.test_x" name="test_ok[vm]"/></testsuite></testsuites>'
    )
    write_manifest(other, "other")
    out = tmp_path / "merged"
    assert main(["merge", str(out), str(report_dir), str(other)]) == 0
    root = ET.parse(out / "junit.xml").getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["ray-conformance", "ray-conformance"]
    props = [
        [(p.get("name"), p.get("value")) for p in s.findall("properties/property")] for s in suites
    ]
    assert props == [
        [("mode", "local"), ("mode", "docker"), ("ray_version", "2.60.0"), ("run_id", "run-1")],
        [("mode", "vm"), ("ray_version", "2.60.0"), ("run_id", "other")],
    ]
    assert len(root.findall(".//testcase")) == 9 + 1  # the run's 9 cases and the other's one
    # The failed mode's diagnostics moved into the merged bundle, and its report links them.
    assert (out / "diagnostics" / "local.txt").read_text() == "ray status output"
    assert 'href="diagnostics/local.txt"' in (out / "report.html").read_text()
    assert main(["verify", str(out)]) == 0  # junit.xml and diagnostics are in the manifest


def test_junit_suite_is_ray_conformance_with_mode_ray_and_run_id(
    pytester: pytest.Pytester,
) -> None:
    _, report_dir = run_suite(pytester)
    root = ET.parse(report_dir / "junit.xml").getroot()
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "ray-conformance"
    assert [(p.get("name"), p.get("value")) for p in suite.findall("properties/property")] == [
        ("mode", "local"),
        ("mode", "docker"),
        ("ray_version", "2.60.0"),
        ("run_id", "run-1"),
    ]
    assert main(["verify", str(report_dir)]) == 0  # relabelled before the manifest hashed it


def test_verify_certify_on_an_ordinary_bundle_says_it_is_not_a_certification_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = shards(tmp_path)
    assert main(["verify", str(a), "--certify"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {a}: not a certification bundle (it has no target.yaml; "
        "`pytest --ray-certify target.yaml` makes one)\n"
    )


def test_summary_omits_modes_that_did_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = shards(tmp_path)  # lists docker as pending: another shard's mode
    assert main(["summary", str(a)]) == 0
    out = capsys.readouterr().out
    assert "docker" not in out
    assert "mode local: torn-down; 2 total, 2 passed, 0 failed, 0 skipped" in out


def test_html_draws_the_spread_tallies_as_bars_in_the_checks_cell() -> None:
    from reports.html import render_html

    tally = Result(
        "test_spread_from_outside_every_node_runs_work",
        "local",
        "passed",
        3.0,
        "",
        "suites/test_spread.py::test_spread_from_outside_every_node_runs_work[local]",
        {"spread_outside_spread_tally": {"aaaa1111ffff": 3, "bbbb2222ffff": 1}},
    )
    page = render_html(
        Results("r", "s", "f", 0, {}, [{"mode": "local", "status": "torn-down"}], [tally])
    )
    bars = re.search(r'<div class="bars" title="spread_outside_spread_tally">(.*?)</td>', page)
    assert bars is not None
    # Without the nodes' names (a bundle from before they were recorded), the id's start.
    assert re.findall(
        r'width:(\d+)px"></span><span title="(\w+)">(\w+)</span> (\d+)', bars.group(1)
    ) == [
        ("80", "aaaa1111ffff", "aaaa1111", "3"),
        ("27", "bbbb2222ffff", "bbbb2222", "1"),
    ]


def test_a_failed_provision_stays_red_whatever_its_teardown_recorded() -> None:
    from reports.html import render_html
    from reports.verdict import verdict

    error = Result(
        "test_ok", "m", "error", 0.0, "setup failed: m: provisioning failed: no head", "t::ok[m]"
    )
    for status in ("provision-failed", "torn-down", "teardown-failed"):
        record: dict[str, Any] = {
            "mode": "m",
            "status": status,
            "reason": "ProvisionError: no head",
            "provision_seconds": 3.0,
            "teardown_seconds": 0.5,
            "handle": {},  # a provision that failed handed nothing over
        }
        results = Results("r", "s", "f", 1, {}, [record], [error])
        assert (
            verdict(results, "m").line
            == "NOT CONFORMANT — provisioning failed: ProvisionError: no head"
        )
        page = render_html(results)
        assert '<td class="l-failed" data-lifecycle="provision" data-status="failed">' in page
        assert "provisioned in" not in page


def test_a_failed_teardown_is_a_red_row_with_its_reason() -> None:
    from reports.html import render_html

    record = {
        "mode": "m",
        "status": "teardown-failed",
        "reason": "LimitExceeded: teardown (--ray-teardown-timeout) took over 5 s",
        "provision_seconds": 3.0,
        "teardown_seconds": 5.0,
        "handle": {"expected_nodes": 2},
        "inventory_after": [{"kind": "container", "name": "m-head", "run_id": "r"}],
    }
    page = render_html(Results("r", "s", "f", 1, {}, [record], [result("test_ok", "m", "passed")]))
    cell = re.search(r'<td class="l-failed" data-lifecycle="teardown".*?</td>', page)
    assert cell is not None
    assert "LimitExceeded: teardown (--ray-teardown-timeout) took over 5 s" in cell.group(0)
    assert "1 left behind" in cell.group(0)


def ray_shards(tmp_path: Path, night: str, docker_on_2_59: str) -> list[Path]:
    """One night of the nightly matrix: docker and kind-rayup on Ray 2.60.0 and on 2.59.0."""
    out = []
    for ray, docker in (("2.60.0", "passed"), ("2.59.0", docker_on_2_59)):
        for mode, outcome in (("docker", docker), ("kind-rayup", "skipped")):
            path = tmp_path / night / f"{mode}-{ray}"
            path.mkdir(parents=True)
            record = {}
            if mode == "docker":  # the same evidence path in both Ray runs
                (path / "diagnostics" / "docker").mkdir(parents=True)
                (path / "diagnostics" / "docker" / "ray-status.txt").write_text(f"Ray {ray}")
                record = {"diagnostics": "diagnostics/docker", "handle": {"ray_version": ray}}
            checks = [result(c, mode, outcome) for c in ("test_ok", "test_two")]
            status = "torn-down" if mode == "docker" else "skipped"
            out.append(
                make_bundle(
                    path, f"{night}{mode}{ray}", checks, {mode: status}, ray, {mode: record}
                )
            )
    return out


def test_merge_of_runs_on_two_ray_releases_is_a_mode_by_ray_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    merged = tmp_path / "matrix"
    assert main(["merge", str(merged), *map(str, ray_shards(tmp_path, "n1", "failed"))]) == 0
    doc = read(merged / "results.json")
    assert [m["mode"] for m in doc["modes"]] == [
        "docker@2.60.0",
        "kind-rayup@2.60.0",
        "docker@2.59.0",
        "kind-rayup@2.59.0",
    ]
    assert {(m["of_mode"], m["ray"]) for m in doc["modes"]} == {
        (mode, ray) for mode in ("docker", "kind-rayup") for ray in ("2.60.0", "2.59.0")
    }
    assert doc["environment"]["ray"] == "mixed: 2.60.0 | 2.59.0"
    # Both runs' diagnostics of the same mode survive, each under its Ray release.
    for ray in ("2.60.0", "2.59.0"):
        assert (merged / f"ray-{ray}/diagnostics/docker/ray-status.txt").read_text() == f"Ray {ray}"
    html = (merged / "report.html").read_text()
    assert 'href="ray-2.59.0/diagnostics/docker"' in html
    assert '<td class="v-not-conformant" data-mode="docker" data-ray="2.59.0">' in html
    assert main(["verify", str(merged)]) == 0
    capsys.readouterr()
    assert main(["show", str(merged)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("mode x Ray  2.60.0          2.59.0")
    assert lines[start + 1 : start + 3] == [
        "docker      INCOMPLETE      NOT CONFORMANT",
        "kind-rayup  NOT RUN         NOT RUN",
    ]

    # The next night compares column by column: docker on 2.59.0 now passes, nothing regressed;
    # kind-rayup skips by design on every Ray, and is let through by its mode's name.
    tonight = tmp_path / "matrix2"
    assert main(["merge", str(tonight), *map(str, ray_shards(tmp_path, "n2", "passed"))]) == 0
    capsys.readouterr()
    assert main(["compare", str(merged), str(tonight), "--allow-skipped", "kind-rayup"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "compared modes: docker@2.60.0, kind-rayup@2.60.0, docker@2.59.0, kind-rayup@2.59.0"
    )
    assert main(["compare", str(tonight), str(merged), "--allow-skipped", "kind-rayup"]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  suites/test_x.py::test_ok[docker] [docker@2.59.0]: passed, now failed",
        "  suites/test_x.py::test_two[docker] [docker@2.59.0]: passed, now failed",
    ]


def test_compare_reads_a_plain_previous_run_as_its_ray_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first night with the Ray axis compares with a night that had none.
    previous = make_bundle(
        tmp_path / "p", "p", [result("test_ok", "docker", "passed")], {"docker": "torn-down"}
    )
    tonight = tmp_path / "matrix"
    assert main(["merge", str(tonight), *map(str, ray_shards(tmp_path, "n", "passed"))]) == 0
    capsys.readouterr()
    assert main(["compare", str(previous), str(tonight), "--allow-skipped", "kind-rayup"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "compared modes: docker@2.60.0 (only in the current run: kind-rayup@2.60.0, "
        "docker@2.59.0, kind-rayup@2.59.0)"
    )


def test_merge_of_runs_on_one_ray_release_keeps_plain_mode_columns(tmp_path: Path) -> None:
    a, b = shards(tmp_path)
    assert main(["merge", str(tmp_path / "out"), str(a), str(b)]) == 0
    doc = read(tmp_path / "out" / "results.json")
    assert sorted(m["mode"] for m in doc["modes"]) == ["docker", "local"]
    assert "mode &times; Ray" not in (tmp_path / "out" / "report.html").read_text()
