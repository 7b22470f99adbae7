"""Render a `Results` as one static, self-contained HTML page that opens on the verdict.

Top to bottom: one verdict banner per mode that ran; the dashboard picture of each mode that has
one; the matrix (a column per mode, provision and teardown as their own rows, checks grouped by
suite under readable titles, certification-profile checks starred); one collapsed line per mode
for the checks that do not apply to it; the failures in full; the run's environment.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

import pytest

from reports.certify import PROFILE
from reports.model import Result, Results, first_line, is_safe_relpath, notes, title_of, worst
from reports.verdict import (
    NOT_RUN,
    RAN,
    Verdict,
    not_applicable,
    provision_failed,
    ray_grid,
    verdicts,
)

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
PROFILE_MARK = "★"

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em 1.5em; color: #1b1f24; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin-top: 1.6em; }
.meta { color: #555; margin: .2em 0; }
.verdict { border-left: .45em solid; padding: .5em .8em; margin: .5em 0; font-size: 1.15em; }
.verdict .mode { font-weight: 600; margin-right: .4em; }
.verdict small { display: block; font-size: .75em; color: #333; margin-top: .2em; }
.v-conformant { background: #dafbe1; border-color: #1a7f37; }
.v-not-conformant { background: #ffebe9; border-color: #cf222e; }
.v-incomplete { background: #fff8c5; border-color: #bf8700; }
.v-not-run { background: #eaeef2; border-color: #6e7781; }
.pictures { display: flex; flex-wrap: wrap; gap: 1em; margin: .8em 0; }
figure { margin: 0; } figcaption { color: #555; font-size: .85em; }
img.shot { width: 40em; max-width: 100%; border: 1px solid #d0d7de; }
.pictures.many img.shot { width: 24em; }
table.matrix { border-collapse: collapse; margin-top: 1em; }
.matrix th, .matrix td { border: 1px solid #d0d7de; padding: .35em .55em; vertical-align: top; }
.matrix thead th { background: #f6f8fa; }
.matrix th.row { text-align: left; font-weight: 600; max-width: 34em; }
.matrix th.row small { display: block; font-weight: 400; color: #666; }
.matrix tr.suite th { text-align: left; background: #f6f8fa; font-weight: 600; }
.matrix tr.suite small { color: #666; font-weight: 400; margin-left: .5em; }
.matrix tr.lifecycle th { font-style: italic; }
.matrix td { min-width: 9em; max-width: 24em; }
.matrix td small, .detail small { display: block; color: #444; overflow-wrap: anywhere; }
.cert { color: #bf8700; margin-right: .25em; }
.dur { float: right; color: #555; font-size: .85em; margin-left: .6em; }
.label { font-weight: 700; }
.o-passed { background: #dafbe1; } .o-failed { background: #ffd8d3; }
.o-error { background: #ffb8b0; } .o-skipped { background: #eaeef2; }
.o-xfailed { background: #fff1c2; } .o-none, .o-na { background: #fff; color: #777; }
.l-ok { background: #dafbe1; } .l-failed { background: #ffb8b0; } .l-other { background: #eaeef2; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
details { margin: .3em 0; }
.bars { font-size: .8em; margin: .3em 0 0; }
.bars div { display: flex; align-items: center; gap: .4em; }
.bars .bar { flex: none; height: .7em; background: #57ab5a; min-width: 1px; }
.bars div > span[title] { overflow-wrap: anywhere; }
.bars .head { font-weight: 700; }
.load { font-size: .8em; margin: .3em 0 0; }
pre.why { margin: .3em 0 0; padding: .3em; font-size: .8em; background: #fff6f5; }
"""


def render_html(results: Results, base_dir: Path | None = None) -> str:
    """The whole page; ``base_dir`` (the report dir) lets files inside it become links."""
    found = verdicts(results)
    # A mode that did not run has its banner, which says why, and no column of grey cells.
    columns = [v.mode for v in found if v.word != NOT_RUN]
    title = f"ray-conformance run {results.run_id}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _meta(results),
        '<section class="verdicts">',
        _grid(results),
        *(_banner(v, results) for v in found),
        _collection_banner(results),
        "</section>",
        _pictures(results, columns, base_dir),
        _matrix(results, columns, base_dir),
        _not_applicable_lines(results, columns),
        _details(results),
        _run(results),
        "</body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


def _meta(results: Results) -> str:
    env = results.environment
    shown = [f"{k} {env[k]}" for k in ("ray", "python") if env.get(k)]
    line = " · ".join([f"started {results.started}", *shown])
    return f'<p class="meta">{_e(line)}</p>'


def _grid(results: Results) -> str:
    """Mode x Ray version, a verdict per cell, when the runs merged here used several Rays."""
    rays, rows = ray_grid(results)
    if not rays:
        return ""
    head = "".join(f"<th>Ray {_e(r)}</th>" for r in rays)
    body = "".join(
        f'<tr><th class="row">{_e(mode)}</th>'
        + "".join(
            f'<td class="{cells[r].css}" data-mode="{_e(mode)}" data-ray="{_e(r)}">'
            f"{_e(cells[r].word)}</td>"
            if r in cells
            else '<td class="o-none">-</td>'
            for r in rays
        )
        + "</tr>"
        for mode, cells in rows
    )
    return (
        f'<table class="matrix grid"><thead><tr><th>mode &times; Ray</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _banner(v: Verdict, results: Results) -> str:
    return (
        f'<div class="verdict {v.css}" data-mode="{_e(v.mode)}" data-verdict="{_e(v.word)}">'
        f'<span class="mode">{_e(v.mode)}:</span><strong>{_e(v.word)}</strong> — {_e(v.detail)}'
        f"<small>{_e(_lifecycle_text(results.record(v.mode)))}</small></div>"
    )


def _lifecycle_text(record: dict[str, Any]) -> str:
    """One line of what happened to the mode's cluster: provision, nodes, versions, teardown."""
    status = str(record.get("status", ""))
    if status not in (*RAN, "provision-failed"):
        return ""
    handle = record.get("handle") or {}
    out = []
    if isinstance(record.get("provision_seconds"), int | float):
        verb = "provisioning failed after" if provision_failed(record) else "provisioned in"
        out.append(f"{verb} {_secs(record['provision_seconds'])}")
    if handle.get("expected_nodes"):
        out.append(f"{handle['expected_nodes']} nodes")
    for label, key in (("Ray", "ray_version"), ("Python", "python_version")):
        if handle.get(key):
            out.append(f"{label} {handle[key]}")
    out.append(_teardown_text(record))
    if record.get("interrupted"):
        out.append("interrupted (SIGINT/SIGTERM): the teardown still ran")
    return " · ".join(o for o in out if o)


def _teardown_text(record: dict[str, Any]) -> str:
    if record.get("status") == "kept":
        return "kept (--ray-keep-cluster)"
    if not isinstance(record.get("teardown_seconds"), int | float):
        return ""
    left = [i for i in record.get("inventory_after") or [] if isinstance(i, dict)]
    after = f"{len(left)} left behind" if left else "nothing left"
    if record.get("status") == "teardown-failed":
        return f"teardown failed after {_secs(record['teardown_seconds'])}, {after}"
    return f"torn down in {_secs(record['teardown_seconds'])}, {after}"


def _collection_banner(results: Results) -> str:
    if not results.collection_errors:
        return ""
    files = ", ".join(str(e.get("nodeid", "")) for e in results.collection_errors)
    return (
        '<div class="verdict v-not-conformant" data-verdict="collection-error">'
        f"<strong>SUITES MISSING</strong> — could not import {_e(files)}</div>"
    )


def _pictures(results: Results, columns: list[str], base_dir: Path | None) -> str:
    """Each mode's dashboard cluster page, what a person sees through the forward; or why not."""
    figures, missing = [], []
    for mode in columns:
        shot = str(results.record(mode).get("screenshot") or "")
        rel = _href(shot, base_dir) if shot.endswith(".png") else ""
        if rel:
            figures.append(
                f'<figure><a href="{_e(rel)}"><img class="shot" src="{_e(rel)}" '
                f'alt="Ray dashboard, cluster page ({_e(mode)})"></a>'
                f"<figcaption>{_e(mode)}: the Ray dashboard's cluster page, through the "
                "mode's port-forward</figcaption></figure>"
            )
        elif shot and not shot.endswith(".png"):
            missing.append(f'<p class="meta" data-mode="{_e(mode)}">{_e(mode)}: {_e(shot)}</p>')
    many = " many" if len(figures) > 1 else ""
    shown = f'<section class="pictures{many}">{"".join(figures)}</section>' if figures else ""
    return shown + "".join(missing)


def _matrix(results: Results, columns: list[str], base_dir: Path | None) -> str:
    if not columns:
        return ""
    cells = results.cells()
    records = {m: results.record(m) for m in columns}
    diagnostics = {m: _href(str(records[m].get("diagnostics", "")), base_dir) for m in columns}
    width = len(columns) + 1
    rows = [
        '<table class="matrix"><thead>',
        "<tr><th>check</th>" + "".join(f"<th>{_e(m)}</th>" for m in columns) + "</tr>",
        "</thead><tbody>",
        _lifecycle_row("provision", [_provision_cell(records[m], base_dir) for m in columns]),
    ]
    for file, suite, checks in results.suites():

        def applies(check: str) -> bool:
            return any(
                not not_applicable(r, records[m])
                for m in columns
                for r in cells.get((check, m), [])
            )

        shown = [c for c in checks if applies(c)]
        if not shown:
            continue
        rows.append(
            f'<tr class="suite"><th colspan="{width}">{_e(suite or file)}'
            f"<small>{_e(file)}</small></th></tr>"
        )
        for check in shown:
            row = [r for m in columns for r in cells.get((check, m), [])]
            mark = (
                f'<span class="cert" title="certification profile">{PROFILE_MARK}</span>'
                if check in PROFILE
                else ""
            )
            where = row[0].nodeid.split("[", 1)[0] if row else check
            rows.append(
                f'<tr><th class="row" title="{_e(where)}">{mark}{_e(title_of(row[0]))}'
                f"<small>{_e(check)}</small></th>"
            )
            rows += [
                _cell(check, m, cells.get((check, m), []), records[m], diagnostics[m])
                for m in columns
            ]
            rows.append("</tr>")
    rows.append(_lifecycle_row("teardown", [_teardown_cell(records[m]) for m in columns]))
    rows.append("</tbody></table>")
    rows.append(
        f'<p class="meta"><span class="cert">{PROFILE_MARK}</span>in the certification profile '
        "(every mode must pass it; see CERTIFY.md)</p>"
    )
    return "\n".join(rows)


def _lifecycle_row(name: str, cells: list[str]) -> str:
    return f'<tr class="lifecycle"><th class="row">{_e(name)}</th>{"".join(cells)}</tr>'


def _provision_cell(record: dict[str, Any], base_dir: Path | None) -> str:
    status = str(record.get("status", "unknown"))
    seconds = _secs(record.get("provision_seconds"))
    if provision_failed(record):
        diag = _diagnostics(str(record.get("diagnostics", "")), base_dir)
        return (
            f'<td class="l-failed" data-lifecycle="provision" data-status="failed">'
            f'<span class="label">FAILED</span><span class="dur">{seconds}</span>'
            f"{_first_lines(first_line(str(record.get('reason', ''))))}{diag}</td>"
        )
    if status in RAN:
        handle = record.get("handle") or {}
        shown = ", ".join(
            text
            for text, value in (
                (f"{handle.get('expected_nodes')} nodes", handle.get("expected_nodes")),
                (f"Ray {handle.get('ray_version')}", handle.get("ray_version")),
                (f"Python {handle.get('python_version')}", handle.get("python_version")),
            )
            if value not in (None, "")
        )
        return (
            f'<td class="l-ok" data-lifecycle="provision" data-status="ok">'
            f'<span class="label">OK</span><span class="dur">{seconds}</span>{_small(shown)}</td>'
        )
    return f'<td class="l-other" data-lifecycle="provision" data-status="{_e(status)}">{_e(status)}</td>'


def _teardown_cell(record: dict[str, Any]) -> str:
    if record.get("status") == "kept":
        return '<td class="l-other" data-lifecycle="teardown" data-status="kept">kept</td>'
    seconds = record.get("teardown_seconds")
    if not isinstance(seconds, int | float):
        return '<td class="l-other" data-lifecycle="teardown" data-status="none">—</td>'
    left = [i for i in record.get("inventory_after") or [] if isinstance(i, dict)]
    if record.get("status") == "teardown-failed":
        why = first_line(str(record.get("reason", "")))
        return (
            f'<td class="l-failed" data-lifecycle="teardown" data-status="failed">'
            f'<span class="label">FAILED</span><span class="dur">{_secs(seconds)}</span>'
            f"{_first_lines(why)}{_small(f'{len(left)} left behind' if left else '')}</td>"
        )
    if left:
        names = ", ".join(
            str(i.get("error") or f"{i.get('kind', '')} {i.get('name', '')}") for i in left
        )
        return (
            f'<td class="l-failed" data-lifecycle="teardown" data-status="leftovers">'
            f'<span class="label">{len(left)} LEFT</span><span class="dur">{_secs(seconds)}</span>'
            f"{_small(names)}</td>"
        )
    return (
        f'<td class="l-ok" data-lifecycle="teardown" data-status="ok"><span class="label">OK'
        f'</span><span class="dur">{_secs(seconds)}</span><small>nothing left</small></td>'
    )


#: The spread counter's records (suites/test_spread.py): the SPREAD tally per node, and who
#: each node is (hostname, IP, head).
SPREAD_SUFFIX = "_spread_tally"
NODES_SUFFIX = "_nodes"
BAR_PX = 80


def _spread_bars(cases: list[Result]) -> str:
    """Per tally (outside, inside), a bar per node: how evenly Ray's SPREAD put the work."""
    charts = []
    for r in cases:
        for key, tally in r.properties.items():
            if not key.endswith(SPREAD_SUFFIX) or not isinstance(tally, dict) or not tally:
                continue
            prefix = key.removesuffix(SPREAD_SUFFIX)
            nodes = _nodes(r.properties.get(prefix + NODES_SUFFIX))
            counts = {str(k): v for k, v in tally.items() if isinstance(v, int | float)}
            for node_id in nodes:
                counts.setdefault(node_id, 0)  # a node SPREAD never used is a bar of zero
            top = max([*counts.values(), 1])
            # The head first, then by hostname: the same order in every mode and every run.
            ordered = sorted(counts, key=_head_first(nodes))
            labels = {n: _node_text(n, nodes.get(n, {})) for n in ordered}
            shared = {t for t in labels.values() if list(labels.values()).count(t) > 1}
            bars = "".join(
                f'<div><span class="bar" style="width:{round(BAR_PX * counts[n] / top)}px">'
                f'</span><span title="{_e(n)}">{_e(labels[n])}'
                # Nodes on one host (local mode) share hostname and IP: the id tells them apart.
                + (f" · {_e(n[:8])}" if labels[n] in shared else "")
                + "</span>"
                + (' <span class="head">head</span>' if nodes.get(n, {}).get("head") else "")
                + f" {_e(str(counts[n]))}</div>"
                for n in ordered
            )
            where = prefix.removeprefix("spread_")
            charts.append(
                f'<div class="bars" title="{_e(key)}">SPREAD tally, {_e(where)}{bars}</div>'
            )
    return "".join(charts)


#: A load's figures (suites/test_spread.py): tasks asked and done, seconds, tasks/s.
LOAD_SUFFIX = "_load"


def _loads(cases: list[Result]) -> str:
    """One line per recorded load: how many tasks came back and the throughput."""
    lines = []
    for r in cases:
        for key, load in r.properties.items():
            if not key.endswith(LOAD_SUFFIX) or not isinstance(load, dict):
                continue
            try:
                done, tasks, rate = (
                    int(load["done"]),
                    int(load["tasks"]),
                    float(load["tasks_per_s"]),
                )
            except (KeyError, TypeError, ValueError):
                continue  # not a load's figures: the tooltip still lists it
            who = key.removesuffix(LOAD_SUFFIX).removeprefix("spread_")
            label = f"{load['sessions']} sessions at once" if "sessions" in load else f"load, {who}"
            lines.append(
                f'<div class="load" data-load="{_e(key)}">{_e(label)}: {done:,} of {tasks:,} '
                f"tasks, {rate:,.1f} tasks/s</div>"
            )
    return "".join(lines)


def _head_first(nodes: dict[str, dict[str, Any]]) -> Callable[[str], tuple[bool, str]]:
    def key(node_id: str) -> tuple[bool, str]:
        node = nodes.get(node_id, {})
        return (not node.get("head"), str(node.get("hostname") or node_id))

    return key


def _nodes(value: Any) -> dict[str, dict[str, Any]]:
    """``[{"node_id", "hostname", "ip", "head"}, ...]`` by node id; malformed entries dropped."""
    if not isinstance(value, list):
        return {}
    return {str(n["node_id"]): n for n in value if isinstance(n, dict) and n.get("node_id")}


def _node_text(node_id: str, node: dict[str, Any]) -> str:
    host, ip = node.get("hostname"), node.get("ip")
    return f"{host} ({ip})" if host and ip else str(host or ip or node_id[:8])


def _cell(
    check: str, mode: str, cases: list[Result], record: dict[str, Any], diagnostics: str
) -> str:
    attrs = f'data-check="{_e(check)}" data-mode="{_e(mode)}"'
    if not cases:
        return f'<td class="o-none" {attrs} data-outcome="" title="not run">—</td>'
    outcome = worst(cases)
    if all(not_applicable(c, record) for c in cases):
        why = first_line(cases[0].message)
        return f'<td class="o-na" {attrs} data-outcome="skipped" title="{_e(why)}">n/a</td>'
    if len(cases) == 1:
        tip = cases[0].message
    else:
        tip = "\n".join(f"{c.nodeid}: {c.outcome} {c.message}".rstrip() for c in cases)
    shown = next((c.message for c in cases if c.outcome == outcome and c.message), "")
    if provision_failed(record) and outcome == "error":
        shown = "not run: provisioning failed"  # the provision row says why, once
    elif len(cases) > 1:
        shown = f"{len(cases)} cases. {shown}"
    recorded = "; ".join(
        f"{k}: {v}" for c in cases for k, v in c.properties.items() if not k.endswith(NODES_SUFFIX)
    )
    if recorded:  # e.g. the spread counter's per-node tallies
        tip = f"{tip}\n{recorded}".strip()
    duration = sum(c.duration_s for c in cases)
    if outcome in ("failed", "error") and not shown.startswith("not run"):
        # A failed check explains itself: its first lines, and where the mode's logs are.
        link = f'<small><a class="diag" href="{_e(diagnostics)}">diagnostics</a></small>'
        body = f"{_first_lines(shown)}{link if diagnostics else ''}"
    else:
        body = _small(shown)
    return (
        f'<td class="o-{_e(outcome)}" {attrs} data-outcome="{_e(outcome)}" title="{_e(tip)}">'
        f'<span class="label">{LABELS.get(outcome, outcome.upper())}</span>'
        f'<span class="dur">{_secs(duration)}</span>{body}{_loads(cases)}{_spread_bars(cases)}</td>'
    )


def _first_lines(text: str) -> str:
    lines = [
        line if len(line) <= SHORT_TEXT_CHARS else line[: SHORT_TEXT_CHARS - 1] + "…"
        for line in text.strip().splitlines()[:FAILURE_LINES]
    ]
    return f'<pre class="why">{_e(chr(10).join(lines))}</pre>' if lines else ""


def _not_applicable_lines(results: Results, columns: list[str]) -> str:
    """Per mode, one collapsed line: the optional checks its cluster has no ability for."""
    parts = []
    for mode in columns:
        record = results.record(mode)
        skipped = [r for r in results.results if r.mode == mode and not_applicable(r, record)]
        if not skipped:
            continue
        items = "".join(
            f"<li>{_e(title_of(r))} <small>{_e(first_line(r.message))}</small></li>"
            for r in skipped
        )
        parts.append(
            f'<details class="na" data-mode="{_e(mode)}"><summary>{_e(mode)}: '
            f"{len(skipped)} optional check{'s' if len(skipped) > 1 else ''} do not apply "
            f"(the mode lacks the ability they test)</summary><ul>{items}</ul></details>"
        )
    return "\n".join(parts)


def _details(results: Results) -> str:
    """Every failure, error, xfail and note in full; one entry for cases that share a message."""
    titles = {r.check: title_of(r) for r in results.results}
    found = [n for n in notes(results) if n.outcome != "skipped"]
    parts = ["<h2>Details</h2>"] if found else []
    for n in found:
        label = LABELS.get(n.outcome, n.outcome.upper())
        if len(n.checks) == 1:
            what, where, listed = titles[n.checks[0]], f"<small>{_e(n.nodeids[0])}</small>", ""
        else:  # one message, many checks (a failed provision): the message once, then which
            what, where = f"{len(n.checks)} checks", ""
            listed = "<small>" + "<br>".join(_e(i) for i in n.nodeids) + "</small>"
        parts.append(
            f'<details class="detail"><summary><span class="label">{label}</span> '
            f"{_e(what)} [{_e(n.mode)}] {where}</summary>"
            f"<pre>{_e(n.message)}</pre>{listed}</details>"
        )
    if results.collection_errors:
        parts.append("<h2>Collection errors</h2>")
        parts += [
            f"<details open><summary>{_e(e.get('nodeid', ''))}</summary>"
            f"<pre>{_e(e.get('message', ''))}</pre></details>"
            for e in results.collection_errors
        ]
    return "\n".join(parts)


def _run(results: Results) -> str:
    """The run's facts, for whoever needs them after the verdict: times, environment, totals."""
    try:
        status = f"{results.exit_status} ({pytest.ExitCode(results.exit_status).name})"
    except ValueError:
        status = str(results.exit_status)
    env = results.environment
    lines = [
        f"run {results.run_id} · started {results.started} · finished {results.finished} · "
        f"pytest exit status {status}",
        " · ".join(f"{k} {v}" for k, v in env.items() if v not in (None, "")),
    ]
    lines += [
        f"{m}: {_totals_text(results.totals(m)) or 'no results'}" for m in results.mode_names()
    ]
    parts = ["<h2>Run</h2>", *(f'<p class="meta">{_e(line)}</p>' for line in lines)]
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
    # "collection failed: ..." is a reason, not a path.
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
