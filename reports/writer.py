"""`ResultsWriter`: the pytest plugin that turns a run's test reports into its results bundle."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from reports import junit
from reports.bundle import write_report
from reports.manifest import write_manifest
from reports.model import (
    HTML_FILE,
    MODE_RECORD_DIR,
    RESULTS_FILE,
    BundleError,
    ModeRecord,
    Result,
    Results,
    RunContext,
    first_line,
)
from reports.secrets import SecretInReport
from reports.verdict import verdicts

MAX_MESSAGE_LINES = 12
MAX_MESSAGE_CHARS = 2000


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def short_message(text: str) -> str:
    """The first lines of ``text``, cut at a line boundary where possible."""
    lines = text.strip().splitlines()
    out = "\n".join(lines[:MAX_MESSAGE_LINES])
    if len(out) > MAX_MESSAGE_CHARS:
        out = out[:MAX_MESSAGE_CHARS].rstrip()
    if out != text.strip():
        out += "\n[...]"
    return out


def failure_message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        return short_message(longrepr)
    # The crash message is the exception and its text ("AssertionError: node ... never ran
    # work"); longreprtext starts with the test's source lines, which say nothing on their own.
    crash: object = getattr(longrepr, "reprcrash", None)
    message: object = getattr(crash, "message", None)
    if isinstance(message, str) and message:
        return short_message(message)
    return short_message(report.longreprtext)


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    # Skips carry (path, lineno, "Skipped: reason"); through xdist the tuple arrives as a list.
    if isinstance(longrepr, tuple | list) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    return short_message(report.longreprtext)


#: User properties the plugin puts on every suite item (`item_properties`); the writer reads
#: them into the result's own fields rather than its ``properties``.
ITEM_KEYS = ("ray_mode", "ray_check", "ray_title", "ray_suite")


def item_properties(item: pytest.Item) -> list[tuple[str, str]]:
    """The check's and its suite's titles (first docstring lines), for the plugin to attach.

    User properties travel with every report, also from xdist workers, where the controller
    that writes the report never sees the items.
    """
    function = getattr(item, "function", None)
    module = getattr(item, "module", None)
    return [
        ("ray_title", first_line(getattr(function, "__doc__", None) or "")),
        ("ray_suite", first_line(getattr(module, "__doc__", None) or "")),
    ]


Window = tuple[float, float]


def overlap(start: float, stop: float, window: Window) -> float:
    """Seconds ``[start, stop]`` shares with ``window``."""
    return max(0.0, min(stop, window[1]) - max(start, window[0]))


@dataclass
class _Fold:
    """One item's outcome so far, built up phase by phase."""

    check: str
    mode: str
    nodeid: str
    outcome: str = "passed"
    message: str = ""
    title: str = ""
    suite: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    #: (start, stop, duration) of each phase: the mode's provision happens inside the setup of
    #: its first check and its teardown inside some check's setup or teardown, and the report
    #: charges neither to that check.
    phases: list[tuple[float, float, float]] = field(default_factory=list)

    def add(self, report: pytest.TestReport) -> None:
        self.phases.append((report.start, report.stop, report.duration))
        for key, value in report.user_properties:
            if key == "ray_title":
                self.title = str(value)
            elif key == "ray_suite":
                self.suite = str(value)
            elif key not in ITEM_KEYS:
                self.properties[str(key)] = value
        wasxfail = getattr(report, "wasxfail", None)
        if report.when == "teardown":
            if report.failed:
                msg = f"teardown failed: {failure_message(report)}"
                if self.outcome in ("failed", "error"):
                    self.message = f"{self.message}\n{msg}" if self.message else msg
                else:
                    self.outcome, self.message = "error", msg
            return
        if report.when not in ("setup", "call"):
            # xdist reports a worker that died mid-test with when="???".
            self.outcome, self.message = "error", failure_message(report)
        elif report.failed:
            if report.when == "setup":
                self.outcome, self.message = "error", f"setup failed: {failure_message(report)}"
            else:
                self.outcome, self.message = "failed", failure_message(report)
        elif report.skipped:
            if wasxfail is not None:
                self.outcome, self.message = "xfailed", str(wasxfail)
            else:
                self.outcome, self.message = "skipped", skip_reason(report)
        elif report.when == "call":
            # A non-strict xfail that passed; xfail_strict turns it into a failure instead.
            self.outcome = "passed"
            self.message = f"unexpectedly passed (xfail: {wasxfail})" if wasxfail else ""

    def result(self, lifecycle: tuple[Window, ...] = ()) -> Result:
        """The folded result; ``lifecycle`` windows (provision, teardown, ...) are not its time."""
        seconds = sum(
            max(0.0, took - sum(overlap(start, stop, w) for w in lifecycle))
            for start, stop, took in self.phases
        )
        return Result(
            self.check,
            self.mode,
            self.outcome,
            round(seconds, 3),
            self.message,
            self.nodeid,
            dict(self.properties),
            self.title,
            self.suite,
        )


class ResultsWriter:
    """Write ``results.json``, ``report.html`` and ``manifest.json`` into the run's report dir.

    Registered on the controller only (never on xdist workers, whose reports reach the
    controller's `pytest_runtest_logreport` anyway). Only items carrying a ``ray_mode`` user
    property are recorded; the harness's own tests are not part of a conformance result.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.started = utcnow()
        self._folds: dict[str, _Fold] = {}
        self._collection_errors: list[dict[str, str]] = []
        self._results: Results | None = None

    @property
    def results_path(self) -> Path:
        return self.ctx.report_dir / RESULTS_FILE

    @property
    def html_path(self) -> Path:
        return self.ctx.report_dir / HTML_FILE

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.started = utcnow()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # A suite module that fails to import has no items, so it would vanish from the
        # matrix without a trace under --continue-on-collection-errors.
        # Under xdist every worker reports the same failure; keep one.
        if report.failed and all(e["nodeid"] != report.nodeid for e in self._collection_errors):
            self._collection_errors.append(
                {"nodeid": report.nodeid, "message": short_message(report.longreprtext)}
            )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if str(report.outcome) == "rerun":  # rescheduled (pytest-rerunfailures, xdist crash hook)
            self._folds.pop(report.nodeid, None)
            return
        props = dict(report.user_properties)  # pairs; lists rather than tuples through xdist
        fold = self._folds.get(report.nodeid)
        if report.when == "setup" or fold is None:
            if "ray_mode" not in props:
                # xdist's report for a crashed worker has no user properties; the item's
                # earlier setup report (if any) already put it in _folds.
                return
            check = str(props.get("ray_check", report.nodeid.split("::")[-1].split("[")[0]))
            fold = self._folds[report.nodeid] = _Fold(check, str(props["ray_mode"]), report.nodeid)
        fold.add(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # trylast: after every plain sessionfinish, so session fixtures (and with them the
        # final ModeRecords) are torn down; under xdist the workers finished before this.
        # session.exitstatus, not the argument: a signal during a teardown in an earlier
        # sessionfinish marks the run interrupted after this hook was called.
        self._results = self.collect(int(session.exitstatus))
        write_report(self.ctx.report_dir, self._results)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # The manifest is the last file written: junitxml writes junit.xml in a plain
        # sessionfinish whose order against ours depends on registration order, and other
        # plugins may still drop diagnostics in the report dir; by unconfigure all are done.
        if self._results is None:
            return
        xml = Path(config.option.xmlpath) if config.option.xmlpath else None
        if xml is not None and xml.is_file():
            try:
                junit.relabel(xml, self._results)
            except BundleError as exc:  # someone else's file: say so, keep the report
                sys.stderr.write(f"ray-conformance: junit.xml left as written: {exc}\n")
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        try:
            write_manifest(self.ctx.report_dir, self.ctx.run_id)
        except SecretInReport as exc:
            # No manifest: the bundle does not verify, and no certification archive is made.
            if terminal is not None:
                terminal.write_line(f"ray-conformance report NOT sealed: {exc}", red=True)
            return
        # Last lines of the run, below pytest's own summary, where a person looks for them.
        if terminal is not None:
            for v in verdicts(self._results):
                terminal.write_line(f"ray-conformance {v.mode}: {v.line}")
            terminal.write_line(
                f"ray-conformance report: {self.html_path} (results: {self.results_path})"
            )

    def collect(self, exit_status: int) -> Results:
        records = self._mode_records()
        windows = {r["mode"]: lifecycle_windows(r) for r in records}
        # Run order within each mode (pytest's collection order, teardown checks last): the
        # same from run to run, and under xdist, where modes interleave, still per mode.
        ordered = sorted(
            (f.result(windows.get(f.mode, ())) for f in self._folds.values()),
            key=lambda r: self._mode_index(r.mode),
        )
        ran = {r.mode for r in ordered}
        return Results(
            run_id=self.ctx.run_id,
            started=self.started,
            finished=utcnow(),
            exit_status=exit_status,
            environment=environment(),
            # A mode selected but not run (filtered out with -k) has no place in the report.
            modes=[r for r in records if r["status"] != "pending" or r["mode"] in ran],
            results=ordered,
            collection_errors=list(self._collection_errors),
        )

    def _mode_index(self, mode: str) -> int:
        return self.ctx.modes.index(mode) if mode in self.ctx.modes else len(self.ctx.modes)

    def _mode_records(self) -> list[dict[str, Any]]:
        records = {m: asdict(ModeRecord(mode=m)) for m in self.ctx.modes}
        # File by file: one unreadable record should mark its mode, not cost the whole report.
        for path in sorted((self.ctx.report_dir / MODE_RECORD_DIR).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                record = asdict(ModeRecord(**data))
            except (OSError, ValueError, TypeError) as exc:
                record = asdict(
                    ModeRecord(mode=path.stem, status="unknown", reason=f"unreadable {path}: {exc}")
                )
            records[record["mode"]] = self._relative_diagnostics(record)
        return sorted(records.values(), key=lambda r: (self._mode_index(r["mode"]), r["mode"]))

    def _relative_diagnostics(self, record: dict[str, Any]) -> dict[str, Any]:
        # The bundle is handed in and moved: a path inside it is kept relative to it.
        for key in ("diagnostics", "screenshot"):
            path = Path(str(record.get(key) or ""))
            if path.is_absolute() and path.is_relative_to(self.ctx.report_dir):
                record[key] = path.relative_to(self.ctx.report_dir).as_posix()
        return record


def lifecycle_windows(record: dict[str, Any]) -> tuple[Window, ...]:
    """What the harness did for the mode outside any check, as (start, stop) epoch seconds."""
    windows = record.get("windows")
    if not isinstance(windows, dict):
        return ()
    return tuple(
        (float(w[0]), float(w[1]))
        for w in windows.values()
        if isinstance(w, list) and len(w) == 2 and all(isinstance(t, int | float) for t in w)
    )


def environment() -> dict[str, Any]:
    try:
        # The installed distribution's version, not `import ray`: importing Ray on the
        # controller costs seconds and starts nothing we need.
        ray_version: str | None = metadata.version("ray")
    except metadata.PackageNotFoundError:
        ray_version = None
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "pytest": pytest.__version__,
        "ray": ray_version,
    }
