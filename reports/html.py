"""Render a `Results` as a static, self-contained HTML matrix: one row per check, one column per mode."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import pytest

from reports.model import OUTCOMES, Result, Results, first_line, is_safe_relpath, notes, worst

LABELS = {
    "passed": "PASS",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "SKIP",
    "xfailed": "XFAIL",
}
SHORT_TEXT_CHARS = 80
#: Lines of a failure shown in its matrix cell: enough for the assertion and the values seen.
FAILURE_LINES = 4

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1f24; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta { color: #555; margin: .2em 0; }
table.matrix { border-collapse: collapse; margin-top: 1em; }
.matrix th, .matrix td { border: 1px solid #d0d7de; padding: .35em .55em; vertical-align: top; }
.matrix thead th { background: #f6f8fa; }
.matrix th.row { text-align: left; font-weight: 600; white-space: nowrap; }
.matrix td { min-width: 9em; max-width: 22em; }
.matrix td small, .detail small { display: block; color: #444; overflow-wrap: anywhere; }
.dur { float: right; color: #555; font-size: .85em; margin-left: .6em; }
.label { font-weight: 700; }
.o-passed { background: #dafbe1; } .o-failed { background: #ffd8d3; }
.o-error { background: #ffb8b0; } .o-skipped { background: #eaeef2; }
.o-xfailed { background: #fff1c2; } .o-none { background: #fff; color: #999; }
.s-provisioned, .s-torn-down { background: #dafbe1; } .s-skipped { background: #eaeef2; }
.s-provision-failed { background: #ffb8b0; } .s-pending, .s-unknown { background: #fff1c2; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
details { margin: .3em 0; }
.bars { font-size: .8em; margin: .15em 0; }
.bars div { display: flex; align-items: center; gap: .4em; white-space: nowrap; }
.bars .bar { display: inline-block; height: .7em; background: #57ab5a; min-width: 1px; }
img.shot { width: 16em; border: 1px solid #d0d7de; }
pre.why { margin: .3em 0 0; padding: .3em; font-size: .8em; background: #fff6f5; }
"""


def render_html(results: Results, base_dir: Path | None = None) -> str:
    """The whole page; ``base_dir`` (the report dir) lets diagnostics inside it become links."""
    modes = results.mode_names()
    records = {str(m["mode"]): m for m in results.modes}
    cells = results.cells()
    diagnostics = {
        m: _href(str(records.get(m, {}).get("diagnostics", "")), base_dir) for m in modes
    }
    title = f"ray-conformance run {results.run_id}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _meta(results),
        '<table class="matrix"><thead>',
        "<tr><th>check</th>" + "".join(f"<th>{_e(m)}</th>" for m in modes) + "</tr>",
        _mode_rows(modes, records, results, base_dir),
        "</thead><tbody>",
    ]
    for check in results.check_names():
        row = [r for m in modes for r in cells.get((check, m), [])]
        where = row[0].nodeid.split("::", 1)[0] if row else ""
        parts.append(f'<tr><th class="row" title="{_e(where)}">{_e(check)}</th>')
        parts += [_cell(check, m, cells.get((check, m), []), diagnostics.get(m, "")) for m in modes]
        parts.append("</tr>")
    parts.append("</tbody></table>")
    parts.append(_details(results))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _meta(results: Results) -> str:
    env = results.environment
    try:
        status = f"{results.exit_status} ({pytest.ExitCode(results.exit_status).name})"
    except ValueError:
        status = str(results.exit_status)
    lines = [
        f"started {results.started} · finished {results.finished} · pytest exit status {status}",
        " · ".join(f"{k} {v}" for k, v in env.items() if v not in (None, "")),
    ]
    totals = dict.fromkeys(OUTCOMES, 0)
    for r in results.results:
        totals[r.outcome] = totals.get(r.outcome, 0) + 1
    lines.append(_totals_text(totals) or "no results")
    return "\n".join(f'<p class="meta">{_e(line)}</p>' for line in lines)


def _mode_rows(
    modes: list[str], records: dict[str, dict[str, Any]], results: Results, base_dir: Path | None
) -> str:
    def row(name: str, cells: list[str]) -> str:
        return f'<tr><th class="row">{_e(name)}</th>{"".join(cells)}</tr>'

    def rec(mode: str) -> dict[str, Any]:
        return records.get(mode, {"mode": mode, "status": "unknown"})

    def handle(mode: str, key: str) -> str:
        value = rec(mode).get("handle", {}).get(key)
        return f"<td>{_e('' if value is None else str(value))}</td>"

    status_cells = []
    for m in modes:
        r = rec(m)
        status, reason = str(r.get("status", "unknown")), str(r.get("reason", ""))
        diag = _diagnostics(str(r.get("diagnostics", "")), base_dir)
        status_cells.append(
            f'<td class="s-{_e(status)}" title="{_e(reason)}"><span class="label">{_e(status)}'
            f"</span>{_small(reason)}{diag}</td>"
        )
    return "\n".join(
        [
            row("status", status_cells),
            row("provision", [f"<td>{_secs(rec(m).get('provision_seconds'))}</td>" for m in modes]),
            row("teardown", [f"<td>{_secs(rec(m).get('teardown_seconds'))}</td>" for m in modes]),
            row("ray", [handle(m, "ray_version") for m in modes]),
            row("python", [handle(m, "python_version") for m in modes]),
            row("expected nodes", [handle(m, "expected_nodes") for m in modes]),
            row("totals", [f"<td>{_e(_totals_text(results.totals(m)))}</td>" for m in modes]),
            row("spread", [f"<td>{_spread_bars(results, m)}</td>" for m in modes]),
            row("dashboard", [f"<td>{_picture(rec(m), base_dir)}</td>" for m in modes]),
        ]
    )


#: The spread counter's tallies (suites/test_spread.py): where SPREAD scheduling put the tasks.
SPREAD_SUFFIX = "_spread_tally"
BAR_PX = 80


def _spread_bars(results: Results, mode: str) -> str:
    """Per tally (outside, inside), a bar per node: how evenly Ray spread the work."""
    charts = []
    for r in results.results:
        if r.mode != mode:
            continue
        for key, tally in r.properties.items():
            if not key.endswith(SPREAD_SUFFIX) or not isinstance(tally, dict) or not tally:
                continue
            counts = {str(k): v for k, v in tally.items() if isinstance(v, int | float)}
            top = max([*counts.values(), 1])
            where = key.removeprefix("spread_").removesuffix(SPREAD_SUFFIX)
            bars = "".join(
                f'<div><span class="bar" style="width:{round(BAR_PX * n / top)}px"></span>'
                f"{_e(node[:8])} {_e(str(n))}</div>"
                for node, n in sorted(counts.items())
            )
            charts.append(f'<div class="bars" title="{_e(key)}">{_e(where)}{bars}</div>')
    return "".join(charts)


def _picture(record: dict[str, Any], base_dir: Path | None) -> str:
    """The dashboard's cluster page as a thumbnail linking to the full picture, or why not."""
    shot = str(record.get("screenshot") or "")
    if rel := _href(shot, base_dir) if shot.endswith(".png") else "":
        return (
            f'<a href="{_e(rel)}"><img class="shot" src="{_e(rel)}" '
            f'alt="Ray dashboard, cluster page ({_e(str(record.get("mode")))})"></a>'
        )
    return _small(shot)


def _cell(check: str, mode: str, cases: list[Result], diagnostics: str) -> str:
    attrs = f'data-check="{_e(check)}" data-mode="{_e(mode)}"'
    if not cases:
        return f'<td class="o-none" {attrs} data-outcome="" title="not run">—</td>'
    outcome = worst(cases)
    if len(cases) == 1:
        tip = cases[0].message
    else:
        tip = "\n".join(f"{c.nodeid}: {c.outcome} {c.message}".rstrip() for c in cases)
    shown = next((c.message for c in cases if c.outcome == outcome and c.message), "")
    if len(cases) > 1:
        shown = f"{len(cases)} cases. {shown}"
    recorded = "; ".join(f"{k}: {v}" for c in cases for k, v in c.properties.items())
    if recorded:  # e.g. the spread counter's per-node tallies
        tip = f"{tip}\n{recorded}".strip()
    duration = sum(c.duration_s for c in cases)
    if outcome in ("failed", "error"):
        # A failed check explains itself: its first lines, and where the mode's logs are.
        why = _first_lines(shown)
        link = f'<small><a class="diag" href="{_e(diagnostics)}">diagnostics</a></small>'
        body = f"{why}{link if diagnostics else ''}"
    else:
        body = _small(shown)
    return (
        f'<td class="o-{_e(outcome)}" {attrs} data-outcome="{_e(outcome)}" title="{_e(tip)}">'
        f'<span class="label">{LABELS.get(outcome, outcome.upper())}</span>'
        f'<span class="dur">{_secs(duration)}</span>{body}</td>'
    )


def _first_lines(text: str) -> str:
    lines = [
        line if len(line) <= SHORT_TEXT_CHARS else line[: SHORT_TEXT_CHARS - 1] + "…"
        for line in text.strip().splitlines()[:FAILURE_LINES]
    ]
    return f'<pre class="why">{_e(chr(10).join(lines))}</pre>' if lines else ""


def _details(results: Results) -> str:
    parts = []
    if found := notes(results):
        parts.append("<h2>Details</h2>")
        for n in found:
            label = LABELS.get(n.outcome, n.outcome.upper())
            what = n.checks[0] if len(n.checks) == 1 else f"{len(n.checks)} checks"
            where = n.nodeid or ", ".join(n.checks)
            parts.append(
                f'<details class="detail"><summary><span class="label">{label}</span> '
                f"{_e(what)} [{_e(n.mode)}] <small>{_e(where)}</small></summary>"
                f"<pre>{_e(n.message)}</pre></details>"
            )
    if results.collection_errors:
        parts.append("<h2>Collection errors</h2>")
        parts += [
            f"<details open><summary>{_e(e.get('nodeid', ''))}</summary>"
            f"<pre>{_e(e.get('message', ''))}</pre></details>"
            for e in results.collection_errors
        ]
    if results.merged_from:
        parts.append("<h2>Merged from</h2><ul>")
        parts += [
            f"<li>{_e(str(s.get('run_id')))} ({_e(str(s.get('dir')))}, "
            f"{_e(str(s.get('started')))}, exit status {_e(str(s.get('exit_status')))})</li>"
            for s in results.merged_from
        ]
        parts.append("</ul>")
    return "\n".join(parts)


def _href(path: str, base_dir: Path | None) -> str:
    """``path`` as a link relative to the report dir, or "" when it lies outside it."""
    if not path:
        return ""
    rel = path
    if base_dir is not None and Path(path).is_absolute():
        try:
            rel = Path(path).relative_to(base_dir).as_posix()
        except ValueError:
            rel = ""
    if not is_safe_relpath(rel):
        return ""
    # "collection failed: ..." is a reason, not a path; a merged bundle has no one's logs.
    return rel if base_dir is None or (base_dir / rel).exists() else ""


def _diagnostics(path: str, base_dir: Path | None) -> str:
    if not path:
        return ""
    if rel := _href(path, base_dir):
        return f'<small><a href="{_e(rel)}">diagnostics</a></small>'
    return f"<small>diagnostics: {_e(path)}</small>"


def _totals_text(counts: dict[str, int]) -> str:
    order = [*LABELS, *(o for o in counts if o not in LABELS)]  # passed first, as people read it
    return ", ".join(f"{counts[o]} {o}" for o in order if counts.get(o))


def _small(text: str) -> str:
    if not text:
        return ""
    line = first_line(text)
    if len(line) > SHORT_TEXT_CHARS:
        line = line[: SHORT_TEXT_CHARS - 1] + "…"
    return f"<small>{_e(line)}</small>"


def _secs(value: object) -> str:
    if not isinstance(value, int | float):
        return ""
    if value >= 60:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"


def _e(text: str) -> str:
    return escape(text, quote=True)
