"""Reading, verifying, merging and showing result bundles; the ``python -m reports`` CLI."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reports.certify import certify_problems, opened
from reports.html import LABELS, render_html
from reports.manifest import MANIFEST_FILE, sha256_file, verify_manifest, write_manifest
from reports.model import (
    HTML_FILE,
    RESULTS_FILE,
    BundleError,
    Result,
    Results,
    first_line,
    load_results,
    notes,
    worst,
    write_json,
    write_text_atomic,
)

#: Exit status when an input cannot be read at all (1 means "read it, and it does not verify").
EXIT_UNREADABLE = 2


def write_report(report_dir: Path, results: Results) -> None:
    """Write ``results.json`` and ``report.html``; the manifest is written separately, last."""
    write_json(report_dir / RESULTS_FILE, results.to_json())
    write_text_atomic(report_dir / HTML_FILE, render_html(results, report_dir))


def merge(out: Path, bundles: Sequence[Path], warn: Callable[[str], object]) -> Results:
    """Merge ``bundles`` (dirs or archives; later ones win a conflict) into a new bundle at ``out``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # Refuse rather than mix: stale files would end up in the new manifest.
        raise BundleError(f"{out}: exists and is not an empty directory")
    if not bundles:
        raise BundleError("nothing to merge")
    with contextlib.ExitStack() as stack:
        sources: list[tuple[Path, Results, str]] = []
        for given in bundles:
            d = stack.enter_context(opened(given))
            loaded = load_results(d)
            if (d / MANIFEST_FILE).exists() and (problems := verify_manifest(d)):
                raise BundleError(f"{given}: does not verify ({'; '.join(problems)})")
            sources.append((given, loaded, sha256_file(d / RESULTS_FILE)))
        return _merge(out, sources, warn)


def _merge(
    out: Path, sources: list[tuple[Path, Results, str]], warn: Callable[[str], object]
) -> Results:

    by_key: dict[tuple[str, str, str], tuple[Path, Result]] = {}
    records: dict[str, dict[str, Any]] = {}
    for d, res, _ in sources:
        for r in res.results:
            if (prev := by_key.get(r.key)) is not None:
                warn(
                    f"warning: {r.check} [{r.mode}] in both {prev[0]} ({prev[1].outcome}) and "
                    f"{d} ({r.outcome}); keeping {d}'s"
                )
            by_key[r.key] = (d, r)
        for m in res.modes:
            # Shards often list every mode but run one; "pending" must not erase a real record.
            prev_rec = records.get(m["mode"])
            if (
                prev_rec is None
                or m.get("status") != "pending"
                or prev_rec.get("status") == "pending"
            ):
                records[m["mode"]] = m

    results = [r for _, r in by_key.values()]
    merged = Results(
        run_id="+".join(dict.fromkeys(res.run_id for _, res, _ in sources)),
        started=min(res.started for _, res, _ in sources),
        finished=max(res.finished for _, res, _ in sources),
        exit_status=_combined_exit([res.exit_status for _, res, _ in sources]),
        environment=_combined_env([res.environment for _, res, _ in sources]),
        modes=list(records.values()),
        results=sorted(results, key=lambda r: (r.nodeid.split("::", 1)[0], r.check, r.nodeid)),
        collection_errors=[e for _, res, _ in sources for e in res.collection_errors],
        merged_from=[
            {
                "dir": str(d),
                "run_id": res.run_id,
                "started": res.started,
                "finished": res.finished,
                "exit_status": res.exit_status,
                # Ties the merged bundle to the exact inputs it was built from.
                "results_sha256": digest,
            }
            for d, res, digest in sources
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, merged)
    write_manifest(out, merged.run_id)
    return merged


def _combined_exit(codes: list[int]) -> int:
    bad = [c for c in codes if c != 0]
    # 5 ("no tests collected") from one shard says less than a failure in another.
    serious = [c for c in bad if c != 5]
    return max(serious) if serious else (5 if bad else 0)


def _combined_env(envs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for env in envs for k in env):
        values = list(dict.fromkeys(str(env.get(key)) for env in envs))
        out[key] = envs[0].get(key) if len(values) == 1 else "mixed: " + " | ".join(values)
    return out


def render_text(results: Results) -> str:
    """A plain-text matrix for terminals and CI logs."""
    modes = results.mode_names()
    checks = results.check_names()
    cells = results.cells()
    status = {str(m["mode"]): str(m.get("status", "")) for m in results.modes}
    width = max([len("check"), len("totals"), *(len(c) for c in checks)])
    col = max([7, *(len(m) for m in modes), *(len(s) for s in status.values())]) + 2

    def line(first: str, values: list[str]) -> str:
        return (first.ljust(width + 2) + "".join(v.ljust(col) for v in values)).rstrip()

    out = [
        f"run {results.run_id}  started {results.started}  finished {results.finished}  "
        f"exit status {results.exit_status}",
        "",
        line("check", modes),
        line("", [status.get(m, "") for m in modes]),
    ]
    for check in checks:
        values = []
        for m in modes:
            cases = cells.get((check, m), [])
            values.append(LABELS.get(worst(cases), worst(cases)) if cases else "-")
        out.append(line(check, values))
    totals = results.totals
    out.append(
        line("totals", [f"{totals(m)['passed']}/{sum(totals(m).values())} pass" for m in modes])
    )
    found = [n for n in notes(results) if n.outcome != "passed"]
    if found:
        out.append("")
    for n in found:
        first = first_line(n.message)
        what = n.checks[0] if len(n.checks) == 1 else f"{len(n.checks)} checks"
        out.append(f"{LABELS.get(n.outcome, n.outcome)} {what} [{n.mode}]: {first}".rstrip())
    return "\n".join(out) + "\n"


def render_summary(results: Results, detail: bool = False) -> str:
    """Per mode: its status and totals; with ``detail``, every check and its reason."""
    status = {str(m["mode"]): str(m.get("status", "")) for m in results.modes}
    out = [f"run {results.run_id}  exit status {results.exit_status}"]
    for mode in results.mode_names():
        t = results.totals(mode)
        failed = t["failed"] + t["error"]
        out.append(
            f"mode {mode}: {status.get(mode) or 'unknown'}; {sum(t.values())} total, "
            f"{t['passed']} passed, {failed} failed, {t['skipped']} skipped"
        )
        if detail:
            for r in (r for r in results.results if r.mode == mode):
                first = first_line(r.message)
                label = LABELS.get(r.outcome, r.outcome.upper())
                out.append(f"  {label:5} {r.nodeid}" + (f": {first}" if first else ""))
    return "\n".join(out) + "\n"


def regressions(previous: Results, current: Results) -> list[str]:
    """Cases that passed in ``previous`` and failed (or errored, or vanished) in ``current``."""
    now = {r.key: r for r in current.results}
    ran = {r.mode for r in current.results}
    out = []
    for r in previous.results:
        if r.outcome != "passed" or r.mode not in ran:
            continue  # a mode not in tonight's matrix (its secrets gone) is not a regression
        after = now.get(r.key)
        if after is None:
            out.append(f"{r.nodeid} [{r.mode}]: passed, now missing")
        elif after.outcome in ("failed", "error"):
            first = first_line(after.message)
            out.append(f"{r.nodeid} [{r.mode}]: passed, now {after.outcome} {first}".rstrip())
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reports",
        description="Read, verify and merge ray-conformance result bundles (dirs or archives)",
        epilog=f"Exit status: 0 ok, 1 the bundle does not verify (or a check regressed), "
        f"{EXIT_UNREADABLE} an input cannot be read.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="Check every file against manifest.json")
    v.add_argument("bundle", type=Path)
    v.add_argument(
        "--certify",
        action="store_true",
        help="Also check target.yaml is complete and every profile check ran and passed",
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
    c = sub.add_parser("compare", help="Fail when a check that passed before fails now")
    c.add_argument("previous", type=Path, help="The previous run's (merged) bundle")
    c.add_argument("current", type=Path)
    return p


def _verify(bundle: Path, certify: bool) -> int:
    with opened(bundle) as d:
        problems = verify_manifest(d)
        if certify and not problems:
            problems = certify_problems(d)
    failed = f"{bundle}: does not {'certify' if certify else 'verify'}"
    return _verdict(problems, failed, f"{bundle}: OK{' (certified)' if certify else ''}")


def _compare(previous: Path, current: Path) -> int:
    with opened(previous) as before, opened(current) as after:
        found = regressions(load_results(before), load_results(after))
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
            return _compare(args.previous, args.current)
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
