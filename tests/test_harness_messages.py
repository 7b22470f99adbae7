"""A mode's own messages are named by the harness, once: modes never name themselves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from harness_fakes import CHECKS, REPO, modes, run, write_fakes

MESSAGES_MODULE = """
from fakemod import FakeProvisioner, record
from provisioners.contract.base import ProvisionError


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


def test_a_built_in_mode_is_named_once(pytester: pytest.Pytester) -> None:
    # external needs no cluster to fail: its address is checked first. It once read
    # "external: provisioning failed: external: --ray-address ...".
    result = run(pytester, "--ray-modes=external", "--ray-address=ray://h")
    result.assert_outcomes(errors=2)
    shown = _named_once(result.outlines, "is not ray://HOST:PORT", "external")
    assert "external: provisioning failed: --ray-address 'ray://h' is not ray://HOST:PORT" in shown


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


#: Option help says which mode reads a flag (``pytest --help``): the one place a mode names itself.
OPTION_HELP = re.compile(r"\bOption(?:\.\w+)?\(")


def _self_named(path: Path, modes: set[str]) -> list[str]:
    """Each string literal of ``path`` that starts with a mode's name, outside option help."""
    found = []
    lines = path.read_text().splitlines()
    names = "|".join(re.escape(m) for m in sorted(modes, key=len, reverse=True))
    prefix = re.compile(r'(?<![\w"])f?"(?:(?:' + names + r")|\{[\w.]*mode(?:\(\))?\}): ")
    for i, line in enumerate(lines):
        if prefix.search(line) and not OPTION_HELP.search("\n".join(lines[max(0, i - 2) : i + 1])):
            found.append(f"{path.relative_to(REPO)}:{i + 1}: {line.strip()}")
    return found


def test_no_mode_names_itself_in_its_messages() -> None:
    from provisioners.contract.registry import discover

    known, _ = discover([])
    found = [
        hit
        for path in sorted((REPO / "provisioners").rglob("*.py"))
        for hit in _self_named(path, set(known))
    ]
    assert not found, "the harness names the mode; a mode's message must not:\n" + "\n".join(found)
