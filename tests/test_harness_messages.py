"""A mode's own messages are named by the harness, once: modes never name themselves."""

from __future__ import annotations

import json
import re

import pytest
from harness_fakes import CHECKS, modes, run, write_fakes

MESSAGES_MODULE = """
from fakemod import FakeProvisioner, record
from provisioners.base import ProvisionError


class ShortOfNodesProvisioner(FakeProvisioner):
    def provision(self, spec):
        self.spec = spec
        record("provision", spec.mode, run_id=spec.run_id)
        raise ProvisionError("2/3 nodes alive")


class NoToolProvisioner(FakeProvisioner):
    def missing_prerequisites(self, spec):
        return ["no `x` on PATH"]


class NoToolsProvisioner(FakeProvisioner):
    def missing_prerequisites(self, spec):
        return ["no `x` on PATH", "no `y` either"]


class StuckTeardownProvisioner(FakeProvisioner):
    def teardown(self):
        super().teardown()
        raise ProvisionError("1 instance still terminating")
"""


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(test_checks=CHECKS, messagesmod=MESSAGES_MODULE)


def _modes(*specs: str) -> list[str]:
    return [arg.replace("fakemod:", "messagesmod:") for arg in modes(*specs)]


def _reason(pytester: pytest.Pytester, mode: str) -> str:
    record = pytester.path / "reports" / "run" / "modes" / f"{mode}.json"
    return str(json.loads(record.read_text())["reason"])


def _named_once(lines: list[str], text: str, mode: str) -> list[str]:
    """The lines that show ``text``, each checked to name ``mode`` exactly once (a test id's
    ``[mode]`` aside)."""
    shown = [line for line in lines if text in line]
    assert shown, f"{text!r} is not in the output"
    for line in shown:
        assert len(re.findall(rf"\b{mode}\b", re.sub(r"\[[^]]*\]", "", line))) == 1, line
    return shown


def _report_dir(pytester: pytest.Pytester) -> list[str]:
    return ["--ray-report-dir", str(pytester.path / "reports" / "run")]


def test_a_provision_error_reads_named_once(pytester: pytest.Pytester) -> None:
    result = run(pytester, *_modes("short=ShortOfNodesProvisioner"), *_report_dir(pytester))
    result.assert_outcomes(errors=2)
    shown = _named_once(result.outlines, "2/3 nodes alive", "short")
    assert "short: provisioning failed: 2/3 nodes alive" in shown
    assert _reason(pytester, "short") == "ProvisionError: 2/3 nodes alive"  # the mode's own


def test_missing_prerequisites_skip_named_once(pytester: pytest.Pytester) -> None:
    result = run(pytester, "-rs", *_modes("notool=NoToolProvisioner"), *_report_dir(pytester))
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED ?1? test_checks.py:*: notool: no `x` on PATH"] * 2)
    _named_once(result.outlines, "no `x` on PATH", "notool")
    assert _reason(pytester, "notool") == "no `x` on PATH"


def test_each_missing_prerequisite_is_named(pytester: pytest.Pytester) -> None:
    result = run(pytester, "-rs", *_modes("notools=NoToolsProvisioner"))
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        ["SKIPPED ?1? test_checks.py:*: notools: no `x` on PATH; notools: no `y` either"] * 2
    )


def test_a_teardown_error_reads_named_once(pytester: pytest.Pytester) -> None:
    result = run(pytester, *_modes("stuck=StuckTeardownProvisioner"))
    result.assert_outcomes(passed=2, errors=1)  # at the last check's teardown, the session's
    shown = _named_once(result.outlines, "1 instance still terminating", "stuck")
    assert "stuck: teardown: 1 instance still terminating; left: nothing the inventory sees" in (
        shown
    )
    result.stdout.no_fnmatch_line("*Traceback*")
