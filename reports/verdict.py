"""Each mode's verdict: the one line a person reads first (the report's banner, the run's last lines).

- ``CONFORMANT``: every certification-profile check ran on the mode and passed (within the
  known-flake allowance), and no other check failed.
- ``NOT CONFORMANT``: provisioning failed, or a check failed or errored; the line names them.
- ``INCOMPLETE``: nothing failed, but part of the profile did not run or was skipped (a ``-k``
  run, ``--ray-keep-cluster``); the line says how much of the profile passed.
- ``NOT RUN``: the mode was skipped (its prerequisites are missing); the line says why.

The profile and its rules are the certification's (``reports/certify.py``), so the banner and
``verify --certify`` never disagree about what passing means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reports.certify import PROFILE, profile_problems
from reports.model import OF_MODE, RAY_KEY, ModeStatus, Result, Results, first_line, title_of

CONFORMANT = "CONFORMANT"
NOT_CONFORMANT = "NOT CONFORMANT"
INCOMPLETE = "INCOMPLETE"
NOT_RUN = "NOT RUN"
#: Failed checks named on the verdict line; the rest are counted.
NAMED = 3
#: Mode statuses after which the mode's cluster had been up (if its provision succeeded).
RAN: tuple[ModeStatus, ...] = ("provisioned", "torn-down", "teardown-failed", "kept")


def provision_failed(record: dict[str, Any]) -> bool:
    """True when the mode's provision failed, whatever its teardown did afterwards.

    A provision that succeeded left its handle in the record; one that failed has none.
    """
    if record.get("status") == "provision-failed":
        return True
    timed = isinstance(record.get("provision_seconds"), int | float)
    return timed and not record.get("handle") and record.get("status") in RAN


@dataclass(frozen=True)
class Verdict:
    mode: str
    word: str  # one of the four above
    detail: str

    @property
    def line(self) -> str:
        return f"{self.word} — {self.detail}"

    @property
    def css(self) -> str:
        return "v-" + self.word.lower().replace(" ", "-")


def verdict(results: Results, mode: str) -> Verdict:
    record = results.record(mode)
    status = str(record.get("status", "unknown"))
    reason = first_line(str(record.get("reason", "")))
    cases = [r for r in results.results if r.mode == mode]
    if provision_failed(record):
        return Verdict(mode, NOT_CONFORMANT, f"provisioning failed: {reason}")
    ran = status in RAN
    if not cases or (not ran and all(r.outcome == "skipped" for r in cases)):
        why = reason or next((first_line(r.message) for r in cases if r.message), "")
        return Verdict(mode, NOT_RUN, why or "no check ran")
    failed = [r for r in cases if r.outcome in ("failed", "error")]
    if failed:
        names = list(dict.fromkeys(title_of(r) for r in failed))
        shown = "; ".join(names[:NAMED]) + (
            f"; and {len(names) - NAMED} more" if len(names) > NAMED else ""
        )
        return Verdict(mode, NOT_CONFORMANT, f"{len(failed)} failed: {shown}")
    profile = [r for r in cases if r.check in PROFILE]
    passed = sum(r.outcome == "passed" for r in profile)
    # A profile check that never ran counts once, as the certification counts it.
    total = len(profile) + sum(1 for c in PROFILE if not any(r.check == c for r in profile))
    problems = profile_problems(results, mode)
    if not problems:
        return Verdict(mode, CONFORMANT, f"{passed}/{total} certification checks")
    missing = total - passed
    if not missing:  # all passed, one with more known-flake retries than a certified check may need
        return Verdict(mode, NOT_CONFORMANT, first_line(problems[0]))
    return Verdict(
        mode,
        INCOMPLETE,
        f"{passed}/{total} certification checks passed, {missing} did not run or were skipped",
    )


def verdicts(results: Results) -> list[Verdict]:
    """One per mode that ran, in column order."""
    return [verdict(results, m) for m in results.mode_names()]


def not_applicable(result: Result, record: dict[str, Any]) -> bool:
    """A skipped optional check on a mode whose cluster was up: the mode lacks that ability.

    Profile checks apply to every mode, so a skipped one is shown (and costs the verdict).
    """
    return (
        result.outcome == "skipped"
        and result.check not in PROFILE
        and record.get("status") in RAN
        and not provision_failed(record)
    )


def ray_grid(results: Results) -> tuple[list[str], list[tuple[str, dict[str, Verdict]]]]:
    """A merge of runs on several Ray releases as mode x Ray: the releases (newest first), then
    each mode with its verdict on each release it ran on. Empty when every run used one Ray.
    """
    rows: dict[str, dict[str, Verdict]] = {}
    for v in verdicts(results):
        record = results.record(v.mode)
        if record.get(OF_MODE) and record.get(RAY_KEY):
            rows.setdefault(str(record[OF_MODE]), {})[str(record[RAY_KEY])] = v
    rays = sorted({r for row in rows.values() for r in row}, key=_release_key, reverse=True)
    return rays, list(rows.items())


def _release_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))
