"""The certification rules' code: one check per rule of ``reports/rules.yaml``, by id.

``python -m reports verify BUNDLE --certify`` and the certification run itself both call
`evaluate`, which checks every rule and returns a `Finding` for each: a rule that cannot be
checked (a file it reads is missing or unreadable) fails, saying why. The checks read the
bundle, never trust it: what had to run, which Ray is supported and how many retries are allowed
come from this project (``reports/certify.py``, ``rules.yaml``).
"""

from __future__ import annotations

import functools
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports import junit
from reports.certify import (
    COMMANDS_FILE,
    TARGET_FILE,
    TOOLS_FILE,
    Rule,
    TargetError,
    policy,
    profile_failures,
    profile_missing,
    read_target,
    target_problems,
    used_programs,
)
from reports.manifest import verify_manifest
from reports.model import (
    MODE_RECORD_DIR,
    PROGRESS_FILE,
    PROVISIONED_IN,
    TORN_DOWN_IN,
    BundleError,
    Results,
    load_results,
)


class Unchecked(Exception):
    """A file a rule reads is missing or unreadable: the rule fails, saying which and why."""


@dataclass(frozen=True)
class Finding:
    """A rule and what breaks it in this bundle (nothing: it holds)."""

    rule: Rule
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """``PASS id: sentence`` (or FAIL, then each problem indented), as verify prints it."""
        word = "PASS" if self.passed else "FAIL"
        return [f"{word} {self.rule.id}: {self.rule.text}", *(f"  {p}" for p in self.problems)]


class Evidence:
    """The bundle's files, each read once, when a rule first needs it."""

    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle

    @functools.cached_property
    def target(self) -> dict[str, Any]:
        try:
            return read_target(self.bundle / TARGET_FILE)
        except TargetError as exc:
            raise Unchecked(str(exc).replace(str(self.bundle / TARGET_FILE), TARGET_FILE)) from None

    @functools.cached_property
    def results(self) -> Results:
        try:
            return load_results(self.bundle)
        except BundleError as exc:
            raise Unchecked(self._relative(str(exc))) from None

    def field(self, name: str) -> str:
        value = self.target.get(name)
        if value is None or not str(value).strip():
            raise Unchecked(f"{TARGET_FILE} has no {name}")
        return str(value).strip()

    def record(self) -> dict[str, Any]:
        """The target mode's record in results.json."""
        mode = self.field("mode")
        found = next((m for m in self.results.modes if m.get("mode") == mode), None)
        if found is None:
            raise Unchecked(f"results.json has no record of mode {mode!r}")
        return found

    def json(self, rel: str) -> Any:
        try:
            return json.loads((self.bundle / rel).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise Unchecked(f"{rel}: unreadable ({exc})") from None

    def text(self, rel: str) -> str:
        try:
            return (self.bundle / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Unchecked(f"{rel}: unreadable ({exc})") from None

    def _relative(self, message: str) -> str:
        return message.replace(f"{self.bundle}/", "")


def checksums(ev: Evidence) -> list[str]:
    try:
        return verify_manifest(ev.bundle)
    except BundleError as exc:
        raise Unchecked(ev._relative(str(exc))) from None


def product_file(ev: Evidence) -> list[str]:
    return [f"{TARGET_FILE}: {p}" for p in target_problems(ev.target)]


def ray_supported(ev: Evidence) -> list[str]:
    version, supported = ev.field("ray_version"), policy().ray_releases
    if version in supported:
        return []
    return [f"{TARGET_FILE}: ray_version {version!r} is not one of {', '.join(supported)}"]


def ray_ran(ev: Evidence) -> list[str]:
    version = ev.field("ray_version")
    cluster = (ev.record().get("handle") or {}).get("ray_version")
    client = ev.results.environment.get("ray")
    problems = []
    if str(cluster) != version:
        problems.append(
            f"{TARGET_FILE}: ray_version {version!r}, but the cluster ran Ray {cluster}"
        )
    if str(client) != version:
        problems.append(f"{TARGET_FILE}: ray_version {version!r}, but the client ran Ray {client}")
    return problems


def profile_ran(ev: Evidence) -> list[str]:
    return profile_missing(ev.results, ev.field("mode"))


def profile_passed(ev: Evidence) -> list[str]:
    return profile_failures(ev.results, ev.field("mode"))


#: JUnit's child element of a testcase -> the outcome results.json gives it (none: passed).
JUNIT_OUTCOMES = {"failure": "failed", "error": "error", "skipped": "skipped"}


def results_junit(ev: Evidence) -> list[str]:
    results = ev.results
    path = ev.bundle / junit.JUNIT_FILE
    if not path.is_file():
        raise Unchecked(f"{junit.JUNIT_FILE} is missing")
    try:
        suites = junit.suites(path)
    except BundleError as exc:
        raise Unchecked(ev._relative(str(exc))) from None
    problems = []
    ids = {p.get("value") for s in suites for p in s.iter("property") if p.get("name") == "run_id"}
    if ids != {results.run_id}:
        problems.append(
            f"junit.xml names run {sorted(map(str, ids))}, results.json {results.run_id}"
        )
    cases: dict[tuple[str, str], list[str]] = {}
    for suite in suites:
        for case in suite.iter("testcase"):
            if any(p.get("name") == "ray_mode" for p in case.iter("property")):
                key = (case.get("classname", ""), case.get("name", ""))
                cases.setdefault(key, []).append(_junit_outcome(case))
    for r in results.results:
        key = junit_key(r.nodeid)
        seen = cases.pop(key, [])
        # results.json says xfailed where JUnit can only say skipped.
        expected = "skipped" if r.outcome == "xfailed" else r.outcome
        if not seen:
            problems.append(f"{r.nodeid}: {r.outcome} in results.json, not in junit.xml")
        elif seen != [expected]:
            problems.append(
                f"{r.nodeid}: {r.outcome} in results.json, {', '.join(seen)} in junit.xml"
            )
    for (classname, name), outcomes in cases.items():
        problems.append(
            f"{classname}::{name}: {', '.join(outcomes)} in junit.xml, not in results.json"
        )
    return problems


def junit_key(nodeid: str) -> tuple[str, str]:
    """(classname, name) pytest's JUnit writer gives a test of this node id."""
    path, *scopes = nodeid.split("::")
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *scopes[:-1]]), scopes[-1] if scopes else ""


def _junit_outcome(case: ET.Element) -> str:
    return next((JUNIT_OUTCOMES[c.tag] for c in case if c.tag in JUNIT_OUTCOMES), "passed")


#: The parts of a mode's record that its own file and results.json must both carry alike.
RECORD_KEYS = ("status", "handle", "inventory_before", "inventory_after")
#: tools.json's entries that are not tools the run started.
NOT_TOOLS = ("python", "ray (installed)", "boto3")


def results_logs(ev: Evidence) -> list[str]:
    mode, record, problems = ev.field("mode"), ev.record(), []
    own = ev.json(f"{MODE_RECORD_DIR}/{mode}.json")
    for key in RECORD_KEYS:
        if not isinstance(own, dict) or own.get(key) != record.get(key):
            problems.append(f"{MODE_RECORD_DIR}/{mode}.json: its {key} is not results.json's")
    lines = [line for line in ev.text(PROGRESS_FILE).splitlines() if f"] {mode} (+" in line]
    told = {
        PROVISIONED_IN: record.get("handle"),
        TORN_DOWN_IN: record.get("status") == "torn-down",
    }
    for phrase, expected in told.items():
        if expected and not any(f": {phrase} " in line for line in lines):
            problems.append(f"{PROGRESS_FILE}: no line of {mode} saying {phrase!r}")
    tools = ev.json(TOOLS_FILE)
    if not isinstance(tools, dict):
        raise Unchecked(f"{TOOLS_FILE}: not a mapping")
    env = ev.results.environment
    python = str(env.get("python", "")).rsplit(" ", 1)[-1]
    for key, expected_value in (("python", python), ("ray (installed)", env.get("ray"))):
        if tools.get(key) != expected_value:
            problems.append(
                f"{TOOLS_FILE}: {key} {tools.get(key)!r}, results.json's environment "
                f"{expected_value!r}"
            )
    ran = used_programs(ev.bundle / COMMANDS_FILE)
    for tool in sorted(set(tools) - set(NOT_TOOLS) - ran):
        problems.append(f"{TOOLS_FILE}: names {tool}, which {COMMANDS_FILE} never ran")
    return problems


#: The code of each rule, by its id in rules.yaml (a test keeps the two the same).
CHECKS: dict[str, Callable[[Evidence], list[str]]] = {
    "checksums": checksums,
    "product-file": product_file,
    "ray-supported": ray_supported,
    "ray-ran": ray_ran,
    "profile-ran": profile_ran,
    "profile-passed": profile_passed,
    "results-junit": results_junit,
    "results-logs": results_logs,
}


def evaluate(bundle: Path) -> list[Finding]:
    """Every rule of ``rules.yaml``, in its order, checked against the bundle directory."""
    ev = Evidence(bundle)
    findings = []
    for rule in policy().rules:
        try:
            problems = CHECKS[rule.id](ev)
        except Unchecked as exc:
            problems = [f"cannot check: {exc}"]
        findings.append(Finding(rule, tuple(problems)))
    return findings
