"""The results document (``results.json``): its types, validation and the matrix view of it."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from reports import schema

SCHEMA = "ray-conformance/results/v1"
RESULTS_FILE = "results.json"
HTML_FILE = "report.html"
#: One ``<mode>.json`` per mode: written by whichever process ran the mode (an xdist worker or
#: the main process), read by the results writer on the controller at the end of the session.
MODE_RECORD_DIR = "modes"
#: The run's progress lines (``[ray-conformance] MODE (+S s): ...``), from every process.
PROGRESS_FILE = "progress.log"
#: The progress phrases that tell a mode's provision and teardown (``provisioned in 12.3 s``).
PROVISIONED_IN = "provisioned in"
TORN_DOWN_IN = "torn down in"

#: In a merge of runs on more than one Ray release, each column is a mode on one release,
#: ``<mode>@<ray>``, and its record says both (``of_mode``, ``ray``): the matrix is mode x Ray.
OF_MODE = "of_mode"
RAY_KEY = "ray"


def column(mode: str, ray: str) -> str:
    """The merged matrix's column of ``mode`` on Ray ``ray``."""
    return f"{mode}@{ray}"


#: Every outcome a (check, mode) can have, worst first: a matrix cell that folds several cases
#: (a check parametrized beyond its mode) shows the worst of them.
OUTCOMES = ("error", "failed", "skipped", "xfailed", "passed")


class BundleError(Exception):
    """A report directory that cannot be read; the message is one line naming the file."""


@dataclass(frozen=True)
class RunContext:
    """One conformance run: its id, where its reports go, and the modes it covers."""

    run_id: str
    report_dir: Path
    modes: tuple[str, ...]  # selected modes, in run order


#: Where a mode's lifecycle stands; "unknown" is a record the writer could not read. A reader
#: shows a status it does not know as it is (the published schema says so), so this is the
#: writer's contract, not a reader's.
ModeStatus = Literal[
    "pending",
    "provisioned",
    "skipped",
    "provision-failed",
    "torn-down",
    "teardown-failed",
    "kept",
    "unknown",
]
MODE_STATUSES: tuple[str, ...] = get_args(ModeStatus)


@dataclass
class ModeRecord:
    """What the harness learned about one mode; ``Results.modes`` holds one per mode."""

    mode: str
    status: ModeStatus = "pending"
    reason: str = ""  # skip reason or provision error
    provision_seconds: float | None = None
    teardown_seconds: float | None = None
    handle: dict[str, Any] = field(default_factory=dict)  # ClusterHandle as a dict
    diagnostics: str = ""  # path of collected diagnostics, if any
    #: What the mode's inventory listed just before teardown and just after (InventoryItem
    #: fields, or one {"error": ...}): the evidence behind the leak check.
    inventory_before: list[dict[str, Any]] = field(default_factory=list)
    inventory_after: list[dict[str, Any]] = field(default_factory=list)
    screenshot: str = ""  # the dashboard's cluster page (PNG), or why there is none
    interrupted: bool = False  # SIGINT/SIGTERM arrived; the teardown still ran
    #: What the harness did outside any check, as name -> [start, stop] (epoch seconds):
    #: provision, teardown, diagnostics, screenshot. The report shows provision and teardown as
    #: their own rows and takes all of it out of the check during whose setup or teardown it ran.
    windows: dict[str, list[float]] = field(default_factory=dict)

    def save(self, report_dir: Path) -> Path:
        path = report_dir / MODE_RECORD_DIR / f"{self.mode}.json"
        write_json(path, asdict(self))  # atomic: a worker killed mid-write leaves no half record
        return path


@dataclass(frozen=True)
class Result:
    """The folded setup/call/teardown outcome of one test item, i.e. one check on one mode."""

    check: str
    mode: str
    outcome: str
    duration_s: float
    message: str
    nodeid: str
    #: What a check recorded besides its verdict (``request.node.user_properties``), e.g. the
    #: spread counter's tallies.
    properties: dict[str, Any] = field(default_factory=dict)
    title: str = ""  # the check's docstring, first line ("" when it has none)
    suite: str = ""  # its module's docstring, first line

    @property
    def key(self) -> tuple[str, str, str]:
        # Keyed by nodeid too: a check parametrized beyond its mode has several items per mode.
        return (self.check, self.mode, self.nodeid)


@dataclass
class Results:
    """One run's results, or several merged runs'."""

    run_id: str
    started: str  # ISO 8601, UTC
    finished: str
    exit_status: int
    environment: dict[str, Any]
    modes: list[dict[str, Any]]  # ModeRecord fields, one per mode in column order
    results: list[Result]
    collection_errors: list[dict[str, str]] = field(default_factory=list)
    merged_from: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema": SCHEMA}
        data.update(asdict(self))
        if not self.merged_from:
            del data["merged_from"]
        return data

    @classmethod
    def from_json(cls, data: Any, source: Path) -> Results:
        """Validate enough of ``data`` that the renderers cannot trip on it."""
        if not isinstance(data, dict):
            raise BundleError(f"{source}: not a results object")
        if data.get("schema") != SCHEMA:
            raise BundleError(
                f"{source}: unsupported schema {data.get('schema')!r} (expected {SCHEMA!r})"
            )
        # The published schema (reports/schemas/results.schema.json) says what a reader may rely on.
        if problem := schema.first_error(schema.RESULTS, data):
            raise BundleError(f"{source}: does not match the results schema: {problem}")
        try:
            results = [
                Result(
                    check=str(r["check"]),
                    mode=str(r["mode"]),
                    outcome=str(r["outcome"]),
                    duration_s=float(r["duration_s"]),
                    message=str(r.get("message", "")),
                    nodeid=str(r["nodeid"]),
                    properties=dict(r.get("properties") or {}),
                    title=str(r.get("title") or ""),
                    suite=str(r.get("suite") or ""),
                )
                for r in data["results"]
            ]
            modes = [dict(m) for m in data["modes"]]
            for m in modes:
                str(m["mode"])
            return cls(
                run_id=str(data["run_id"]),
                started=str(data["started"]),
                finished=str(data["finished"]),
                exit_status=int(data["exit_status"]),
                environment=dict(data.get("environment", {})),
                modes=modes,
                results=results,
                collection_errors=[dict(e) for e in data.get("collection_errors", [])],
                merged_from=[dict(m) for m in data.get("merged_from", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{source}: malformed results ({type(exc).__name__}: {exc})") from exc

    # -- the matrix view shared by the HTML and text renderers --------------------------------

    def mode_names(self) -> list[str]:
        """The modes that ran, in column order; a mode that was selected but not run is left out.

        "Not run" is a record still ``pending`` with no result: filtered out with ``-k``, or a
        shard's placeholder for a mode another shard ran. A skipped mode ran (its checks say why).
        """
        ran = {r.mode for r in self.results}
        names = [
            str(m["mode"])
            for m in self.modes
            if m.get("status", "pending") != "pending" or m["mode"] in ran
        ]
        # A result for a mode without a record still gets a column rather than vanishing.
        names += sorted(ran - set(names))
        return names

    def record(self, mode: str) -> dict[str, Any]:
        """The mode's record (`ModeRecord` fields), or a stand-in for a mode that has none."""
        found = next((m for m in self.modes if m.get("mode") == mode), None)
        return found if found is not None else {"mode": mode, "status": "unknown"}

    def check_names(self) -> list[str]:
        """Checks in run order, grouped by suite file: the order their suites define them in.

        Results are stored in run order (pytest's collection order within a mode, the
        teardown checks last), which stays the same between runs, with or without xdist.
        """
        by_file: dict[str, list[str]] = {}
        for r in self.results:
            checks = by_file.setdefault(r.nodeid.split("::", 1)[0], [])
            if r.check not in checks:
                checks.append(r.check)
        return [c for checks in by_file.values() for c in checks]

    def suites(self) -> list[tuple[str, str, list[str]]]:
        """(suite file, its title, its checks) in run order: the matrix's row groups."""
        out: dict[str, tuple[str, list[str]]] = {}
        for r in self.results:
            file = r.nodeid.split("::", 1)[0]
            _, checks = out.setdefault(file, (r.suite, []))
            if r.check not in checks:
                checks.append(r.check)
        return [(file, title, checks) for file, (title, checks) in out.items()]

    def cells(self) -> dict[tuple[str, str], list[Result]]:
        out: dict[tuple[str, str], list[Result]] = {}
        for r in self.results:
            out.setdefault((r.check, r.mode), []).append(r)
        return out

    def totals(self, mode: str) -> dict[str, int]:
        counts = dict.fromkeys(OUTCOMES, 0)
        for r in self.results:
            if r.mode == mode:
                counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return counts


@dataclass(frozen=True)
class Note:
    """A line of the details list: the results of one mode that share an outcome and a message."""

    outcome: str
    mode: str
    message: str
    checks: tuple[str, ...]
    nodeids: tuple[str, ...]


def notes(results: Results) -> list[Note]:
    """Every result that is not a plain pass, grouped: a skipped mode or a failed provision
    gives every check the same message, and one line says it once."""
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in results.results:
        if r.outcome != "passed" or r.message:
            groups.setdefault((r.outcome, r.mode, r.message), []).append(r)
    return [
        Note(outcome, mode, message, tuple(r.check for r in rs), tuple(r.nodeid for r in rs))
        for (outcome, mode, message), rs in groups.items()
    ]


def readable(check: str) -> str:
    """A check's title when its docstring gives none: ``test_a_b`` -> "A b"."""
    return check.removeprefix("test_").replace("_", " ").capitalize()


def title_of(result: Result) -> str:
    return result.title or readable(result.check)


def first_line(text: str) -> str:
    """The first line of a message, which is what a one-line listing shows of it."""
    return text.strip().splitlines()[0] if text.strip() else ""


def worst(results: list[Result]) -> str:
    rank = {o: i for i, o in enumerate(OUTCOMES)}
    return min((r.outcome for r in results), key=lambda o: rank.get(o, -1))


def load_results(report_dir: Path) -> Results:
    """Read ``<report_dir>/results.json``, raising `BundleError` with a one-line reason."""
    if not report_dir.is_dir():
        raise BundleError(f"{report_dir}: no such directory")
    return Results.from_json(read_json(report_dir / RESULTS_FILE), report_dir / RESULTS_FILE)


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{path}: not found (is this a ray-conformance report dir?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: unreadable ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def write_text_atomic(path: Path, text: str) -> None:
    # Write-then-rename: an interrupted run leaves the previous file or none, never half a JSON.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def is_safe_relpath(rel: str) -> bool:
    """True for a plain relative POSIX path inside the bundle (no ``..``, not absolute)."""
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel
