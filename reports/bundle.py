"""Reading, verifying, merging and showing result bundles; the ``python -m reports`` CLI."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reports import junit
from reports.certify import PROFILE, TARGET_FILE, opened, policy, tox_suffix
from reports.html import LABELS, render_html
from reports.manifest import MANIFEST_FILE, sha256_file, verify_manifest, write_manifest
from reports.model import (
    HTML_FILE,
    OF_MODE,
    RAY_KEY,
    RESULTS_FILE,
    BundleError,
    Result,
    Results,
    column,
    first_line,
    is_safe_relpath,
    load_results,
    notes,
    title_of,
    worst,
    write_json,
    write_text_atomic,
)
from reports.rules import evaluate
from reports.submission import NotCertified, lay_out
from reports.verdict import NOT_CONFORMANT, NOT_RUN, not_applicable, ray_grid, verdicts

#: Exit status when an input cannot be read at all (1 means "read it, and it does not verify").
EXIT_UNREADABLE = 2
#: Widest check title in the text matrix; longer ones are cut.
MAX_TITLE = 60
#: How a merged environment value says its sources differed.
MIXED = "mixed: "


def write_report(report_dir: Path, results: Results) -> None:
    """Write ``results.json`` and ``report.html``; the manifest is written separately, last."""
    write_json(report_dir / RESULTS_FILE, results.to_json())
    write_text_atomic(report_dir / HTML_FILE, render_html(results, report_dir))


@dataclasses.dataclass(frozen=True)
class Source:
    """One bundle given to ``merge``: as named, as a directory (unpacked if an archive)."""

    given: Path
    dir: Path
    results: Results
    digest: str  # sha256 of its results.json
    #: Evidence that moves to another path in the merged bundle: new path -> path in ``dir``.
    moves: dict[str, str] = dataclasses.field(default_factory=dict)


def merge(out: Path, bundles: Sequence[Path], warn: Callable[[str], object]) -> Results:
    """Merge ``bundles`` (dirs or archives; later ones win a conflict) into a new bundle at ``out``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # Refuse rather than mix: stale files would end up in the new manifest.
        raise BundleError(f"{out}: exists and is not an empty directory")
    if not bundles:
        raise BundleError("nothing to merge")
    with contextlib.ExitStack() as stack:
        sources: list[Source] = []
        for given in bundles:
            d = stack.enter_context(opened(given))
            loaded = load_results(d)
            if (d / MANIFEST_FILE).exists() and (problems := verify_manifest(d)):
                raise BundleError(f"{given}: does not verify ({'; '.join(problems)})")
            sources.append(Source(given, d, loaded, sha256_file(d / RESULTS_FILE)))
        return _merge(out, sources, warn)


def _merge(out: Path, sources: list[Source], warn: Callable[[str], object]) -> Results:
    # Runs on more than one Ray release: every column becomes mode@ray (the matrix then is
    # mode x Ray version), and each run's evidence moves under ray-<version>/ so none collide.
    if len(_rays(sources)) > 1:
        sources = [_by_ray(src) for src in sources]
    by_key: dict[tuple[str, str, str], tuple[Path, Result]] = {}
    records: dict[str, tuple[Source, dict[str, Any]]] = {}
    for src in sources:
        for r in src.results.results:
            if (prev := by_key.get(r.key)) is not None:
                warn(
                    f"warning: {r.check} [{r.mode}] in both {prev[0]} ({prev[1].outcome}) and "
                    f"{src.given} ({r.outcome}); keeping {src.given}'s"
                )
            by_key[r.key] = (src.given, r)
        for m in src.results.modes:
            # Shards often list every mode but run one; "pending" must not erase a real record.
            prev_rec = records.get(m["mode"])
            if (
                prev_rec is None
                or m.get("status") != "pending"
                or prev_rec[1].get("status") == "pending"
            ):
                records[m["mode"]] = (src, m)

    merged = Results(
        run_id="+".join(dict.fromkeys(src.results.run_id for src in sources)),
        started=min(src.results.started for src in sources),
        finished=max(src.results.finished for src in sources),
        exit_status=_combined_exit([src.results.exit_status for src in sources]),
        environment=_combined_env([src.results.environment for src in sources]),
        modes=[m for _, m in records.values()],
        # Run order, source by source: each shard's rows stay in its suites' order.
        results=[r for _, r in by_key.values()],
        collection_errors=[e for src in sources for e in src.results.collection_errors],
        merged_from=[
            {
                "dir": str(src.given),
                "run_id": src.results.run_id,
                "started": src.results.started,
                "finished": src.results.finished,
                "exit_status": src.results.exit_status,
                # Ties the merged bundle to the exact inputs it was built from.
                "results_sha256": src.digest,
            }
            for src in sources
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    for src, record in records.values():
        _copy_evidence(src, out, record)
    junit.merged(out, [(src.dir, src.results) for src in sources])
    write_report(out, merged)
    write_manifest(out, merged.run_id)
    return merged


#: A mode record's files that the report links to: they move into the merged bundle with it.
EVIDENCE = ("diagnostics", "screenshot")


def _copy_evidence(src: Source, out: Path, record: dict[str, Any]) -> None:
    for key in EVIDENCE:
        rel = str(record.get(key) or "")
        origin = src.moves.get(rel, rel)
        if not is_safe_relpath(rel) or not is_safe_relpath(origin):
            continue  # a reason ("no screenshot: ..."), or a path outside the bundle
        if not (src.dir / origin).exists():
            continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if (src.dir / origin).is_dir():
            shutil.copytree(src.dir / origin, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(src.dir / origin, dest)


def run_ray(results: Results) -> str:
    """The Ray release a run's client used; "" for a merge of runs on several."""
    ray = str(results.environment.get("ray") or "")
    return "" if ray.startswith(MIXED) else ray


def _rays(sources: list[Source]) -> set[str]:
    found = {run_ray(src.results) for src in sources}
    found |= {str(m.get(RAY_KEY) or "") for src in sources for m in src.results.modes}
    return found - {""}


def by_ray(results: Results) -> Results:
    """``results`` with each column named ``mode@ray``; as they are when already so named, or
    when they do not say one Ray (a merge of runs on several)."""
    ray = run_ray(results)
    if not ray or any(m.get(OF_MODE) for m in results.modes):
        return results
    return dataclasses.replace(
        results,
        modes=[
            {**m, "mode": column(str(m["mode"]), ray), OF_MODE: m["mode"], RAY_KEY: ray}
            for m in results.modes
        ],
        results=[dataclasses.replace(r, mode=column(r.mode, ray)) for r in results.results],
    )


def _by_ray(src: Source) -> Source:
    """``src`` with its columns named ``mode@ray`` and its evidence under ``ray-<ray>/``."""
    results = by_ray(src.results)
    if results is src.results:
        return src
    moves: dict[str, str] = {}
    for record in results.modes:
        for key in EVIDENCE:
            rel = str(record.get(key) or "")
            if is_safe_relpath(rel) and (src.dir / rel).exists():
                record[key] = f"ray-{record[RAY_KEY]}/{rel}"
                moves[record[key]] = rel
    return dataclasses.replace(src, results=results, moves=moves)


def _combined_exit(codes: list[int]) -> int:
    bad = [c for c in codes if c != 0]
    # 5 ("no tests collected") from one shard says less than a failure in another.
    serious = [c for c in bad if c != 5]
    return max(serious) if serious else (5 if bad else 0)


def _combined_env(envs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for env in envs for k in env):
        values = list(dict.fromkeys(str(env.get(key)) for env in envs))
        out[key] = envs[0].get(key) if len(values) == 1 else MIXED + " | ".join(values)
    return out


def render_text(results: Results) -> str:
    """The verdicts, then a plain-text matrix of the modes that ran, for terminals and CI logs."""
    found = verdicts(results)
    modes = [v.mode for v in found if v.word != NOT_RUN]
    checks = results.check_names()
    cells = results.cells()
    titles = {r.check: title_of(r) for r in results.results}
    # Each title follows a two-character mark ("* " for the profile).
    width = min(MAX_TITLE, max([len("  totals"), *(len(titles[c]) + 2 for c in checks)]))
    totals = {
        m: f"{results.totals(m)['passed']}/{sum(results.totals(m).values())} pass" for m in modes
    }
    col = max([7, *(len(m) for m in modes), *(len(t) for t in totals.values())]) + 2

    def line(first: str, values: list[str]) -> str:
        first = first if len(first) <= width else first[: width - 1] + "…"
        return (first.ljust(width + 2) + "".join(v.ljust(col) for v in values)).rstrip()

    out = [
        f"run {results.run_id}  started {results.started}  finished {results.finished}  "
        f"exit status {results.exit_status}",
        "",
        *(f"{v.mode}: {v.line}" for v in found),
    ]
    out += render_grid(results)
    if modes:
        out += ["", line("check", modes)]
        for check in checks:
            values = []
            for m in modes:
                cases = cells.get((check, m), [])
                if cases and all(not_applicable(c, results.record(m)) for c in cases):
                    values.append("n/a")
                else:
                    values.append(LABELS.get(worst(cases), worst(cases)) if cases else "-")
            mark = "* " if check in PROFILE else "  "
            out.append(line(mark + titles[check], values))
        out.append(line("  totals", [totals[m] for m in modes]))
        out.append("(* in the certification profile)")
    optional = {
        m: sum(not_applicable(r, results.record(m)) for r in results.results if r.mode == m)
        for m in modes
    }
    kept = [r for r in results.results if not not_applicable(r, results.record(r.mode))]
    shown = dataclasses.replace(results, results=kept)
    found_notes = [n for n in notes(shown) if n.outcome != "passed" and n.mode in modes]
    if found_notes or any(optional.values()):
        out.append("")
    for m, count in optional.items():
        if count:
            out.append(f"n/a {count} optional checks [{m}]: the mode lacks the ability they test")
    for n in found_notes:
        first = first_line(n.message)
        what = n.checks[0] if len(n.checks) == 1 else f"{len(n.checks)} checks"
        out.append(f"{LABELS.get(n.outcome, n.outcome)} {what} [{n.mode}]: {first}".rstrip())
    return "\n".join(out) + "\n"


def render_grid(results: Results) -> list[str]:
    """Mode x Ray version, one verdict per cell, for a merge of runs on several Ray releases."""
    rays, rows = ray_grid(results)
    if not rays:
        return []
    first = max([len("mode x Ray"), *(len(mode) for mode, _ in rows)]) + 2
    width = max([len(NOT_CONFORMANT), *map(len, rays)]) + 2
    lines = ["", "mode x Ray".ljust(first) + "".join(r.ljust(width) for r in rays)]
    for mode, cells in rows:
        words = [cells[r].word if r in cells else "-" for r in rays]
        lines.append((mode.ljust(first) + "".join(w.ljust(width) for w in words)).rstrip())
    return [line.rstrip() for line in lines]


def render_summary(results: Results, detail: bool = False) -> str:
    """Per mode that ran: its verdict, status and totals; with ``detail``, every check and why."""
    status = {str(m["mode"]): str(m.get("status", "")) for m in results.modes}
    out = [f"run {results.run_id}  exit status {results.exit_status}"]
    for v in verdicts(results):
        mode = v.mode
        t = results.totals(mode)
        failed = t["failed"] + t["error"]
        out.append(
            f"mode {mode}: {status.get(mode) or 'unknown'}; {sum(t.values())} total, "
            f"{t['passed']} passed, {failed} failed, {t['skipped']} skipped"
        )
        out.append(f"  {v.line}")
        if detail:
            for r in (r for r in results.results if r.mode == mode):
                first = first_line(r.message)
                label = LABELS.get(r.outcome, r.outcome.upper())
                out.append(f"  {label:5} {r.nodeid}" + (f": {first}" if first else ""))
    return "\n".join(out) + "\n"


def compared_modes(previous: Results, current: Results) -> tuple[list[str], str]:
    """The modes both runs ran, and a line naming them (and those only one side ran).

    Raises `BundleError` naming both sides when they share no mode: there is nothing to compare,
    and "no regressions" would be a false green.
    """
    before, after = previous.mode_names(), current.mode_names()
    shared = [m for m in after if m in before]
    if not shared:
        raise BundleError(
            f"no mode in common: the previous run ran {', '.join(before) or 'no mode'}, "
            f"the current run ran {', '.join(after) or 'no mode'}"
        )
    line = f"compared modes: {', '.join(shared)}"
    extra = [
        f"only in the {side}: {', '.join(ms)}"
        for side, ms in (
            ("previous run", [m for m in before if m not in shared]),
            ("current run", [m for m in after if m not in shared]),
        )
        if ms
    ]
    return shared, line + (f" ({'; '.join(extra)})" if extra else "")


def regressions(
    previous: Results, current: Results, allow_skipped: Sequence[str] = ()
) -> list[str]:
    """What got worse: a check that passed before and now fails, errors, is skipped or missing;
    a mode of the current run whose every check was skipped (unless ``allow_skipped`` names it).

    A mode the current run did not run at all (a job whose secrets are gone) is not compared.
    """
    now = {r.key: r for r in current.results}
    ran = set(current.mode_names())
    out = []
    for r in previous.results:
        if r.outcome != "passed" or r.mode not in ran:
            continue
        after = now.get(r.key)
        if after is None:
            out.append(f"{r.nodeid} [{r.mode}]: passed, now missing")
        elif after.outcome in ("failed", "error", "skipped"):
            first = first_line(after.message)
            out.append(f"{r.nodeid} [{r.mode}]: passed, now {after.outcome} {first}".rstrip())
    for mode in current.mode_names():
        cases = [r for r in current.results if r.mode == mode]
        allowed = {mode, str(current.record(mode).get(OF_MODE) or mode)} & set(allow_skipped)
        if cases and not allowed and all(r.outcome == "skipped" for r in cases):
            why = first_line(str(current.record(mode).get("reason") or cases[0].message))
            out.append(f"mode {mode}: all {len(cases)} checks skipped ({why})")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reports",
        description="Read, verify and merge ray-conformance result bundles (dirs or archives)",
        epilog=f"Exit status: 0 ok, 1 the bundle does not verify (or a check regressed), "
        f"{EXIT_UNREADABLE} an input cannot be read (or used: no mode in common, "
        "not a certification bundle).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="Check every file against manifest.json")
    v.add_argument("bundle", type=Path)
    v.add_argument(
        "--certify",
        action="store_true",
        help="Check the certification rules (reports/rules.yaml), printing each with PASS or FAIL",
    )
    sb = sub.add_parser(
        "submission",
        help="Lay out a certified archive as a submission (DIR/vX.Y/<product>/PRODUCT.yaml, ...)",
    )
    sb.add_argument("archive", type=Path, help="The archive a certification run wrote")
    sb.add_argument(
        "out", type=Path, help="The submissions directory (a k8s-conformance-like tree)"
    )
    r = sub.add_parser(
        "releases",
        help="The supported Ray releases (reports/rules.yaml), newest first, with each one's tox env",
    )
    r.add_argument(
        "--json",
        action="store_true",
        help='For CI matrices: [{"ray": "2.60.0", "tox": ""}, {"ray": "2.59.0", "tox": "-ray2.59"}]',
    )
    m = sub.add_parser("merge", help="Merge several runs' bundles into a new one")
    m.add_argument("out", type=Path, help="New bundle directory (must be absent or empty)")
    m.add_argument(
        "bundles", type=Path, nargs="+", help="Bundles to merge; later ones win conflicts"
    )
    s = sub.add_parser("show", help="Print the results matrix as text")
    s.add_argument("bundle", type=Path)
    su = sub.add_parser("summary", help="Print each mode's status and totals")
    su.add_argument("bundle", type=Path)
    su.add_argument("--detail", action="store_true", help="List every check with its reason")
    c = sub.add_parser(
        "compare",
        help="Fail when a check that passed before fails, is skipped or is missing now, "
        "or when a mode skipped every check",
    )
    c.add_argument("previous", type=Path, help="The previous run's (merged) bundle")
    c.add_argument("current", type=Path)
    c.add_argument(
        "--allow-skipped",
        action="append",
        default=[],
        metavar="MODE",
        help="A mode that may skip every check (one skipped by design); repeatable",
    )
    return p


def _verify(bundle: Path, certify: bool) -> int:
    with opened(bundle) as d:
        if not certify:
            problems = verify_manifest(d)
            return _verdict(problems, f"{bundle}: does not verify", f"{bundle}: OK")
        if not (d / TARGET_FILE).is_file():
            raise BundleError(
                f"{bundle}: not a certification bundle (it has no {TARGET_FILE}; "
                "`pytest --ray-certify target.yaml` makes one)"
            )
        findings = evaluate(d)
    # Every rule, passed or not: the reviewer sees what was checked, not only what failed.
    for finding in findings:
        sys.stdout.write("".join(f"{line}\n" for line in finding.lines()))
    failed = [f.rule.id for f in findings if not f.passed]
    if failed:
        sys.stdout.write(
            f"{bundle}: does not certify ({len(failed)} of {len(findings)} rules failed: "
            f"{', '.join(failed)})\n"
        )
        return 1
    sys.stdout.write(f"{bundle}: OK (certified: {len(findings)}/{len(findings)} rules)\n")
    return 0


def _releases(as_json: bool) -> int:
    found = [{"ray": v, "tox": tox_suffix(v)} for v in policy().ray_releases]
    if as_json:
        sys.stdout.write(json.dumps(found) + "\n")
        return 0
    for entry in found:
        lock = " (requirements.lock)" if not entry["tox"] else ""
        sys.stdout.write(
            f"Ray {entry['ray']}{lock}: tox -e mode{entry['tox']} -- --ray-modes <mode>\n"
        )
    return 0


def _submission(archive: Path, out: Path) -> int:
    try:
        dest = lay_out(archive, out)
    except NotCertified as exc:
        sys.stderr.write(f"{exc}; `verify {archive} --certify` says why\n")
        return 1
    sys.stdout.write(f"submission of {archive.name}: {dest}\n")
    for path in sorted(dest.iterdir()):
        sys.stdout.write(f"  {path.name}\n")
    return 0


def _compare(previous: Path, current: Path, allow_skipped: Sequence[str]) -> int:
    with opened(previous) as before, opened(current) as after:
        prev, cur = load_results(before), load_results(after)
    if any(m.get(OF_MODE) for m in [*prev.modes, *cur.modes]):
        # One side is a mode x Ray matrix: compare the other's columns as mode@ray too (the
        # first night of the Ray axis still compares with the night before it).
        prev, cur = by_ray(prev), by_ray(cur)
    _, line = compared_modes(prev, cur)
    sys.stdout.write(line + "\n")
    found = regressions(prev, cur, allow_skipped)
    failed = f"{len(found)} regression(s) since {previous}:"
    return _verdict(found, failed, f"no regressions since {previous}")


def _verdict(problems: list[str], failed: str, ok: str) -> int:
    """Exit 1 with ``failed`` and each problem on stderr, else 0 with ``ok`` on stdout."""
    if problems:
        sys.stderr.write(failed + "\n" + "".join(f"  {p}\n" for p in problems))
        return 1
    sys.stdout.write(ok + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "verify":
            return _verify(args.bundle, args.certify)
        if args.command == "compare":
            return _compare(args.previous, args.current, args.allow_skipped)
        if args.command == "submission":
            return _submission(args.archive, args.out)
        if args.command == "releases":
            return _releases(args.json)
        if args.command == "merge":
            merged = merge(args.out, args.bundles, lambda msg: sys.stderr.write(msg + "\n"))
            sys.stdout.write(
                f"merged {len(args.bundles)} bundles ({len(merged.results)} results) into "
                f"{args.out / HTML_FILE}\n"
            )
        else:
            with opened(args.bundle) as d:
                results = load_results(d)
            if args.command == "summary":
                sys.stdout.write(render_summary(results, args.detail))
            else:
                sys.stdout.write(render_text(results))
    except BundleError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_UNREADABLE
    return 0
