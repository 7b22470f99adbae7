"""``make bench``: every bench in turn, then one table of every figure with its target.

    .venv/bin/python bench/run_all.py [--only bench_load,bench_kind] [--table-only]

Each bench runs as its own process (bounded, its output shown and kept in bench/out/NAME.log)
and writes its figures to bench/out/NAME.json (bench/figures.py). Then bench/results.json
(every figure, the machine, each bench's exit) and bench/RESULTS.md (the tables, each figure
beside its target, and every target not met or not measured with what the benches saw).
``--table-only`` rebuilds the two files from the figures already in bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import FIGURES_ENV, OUT, machine, now

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_JSON = HERE / "results.json"
#: In the order run: the quick ones first, the whole matrix last.
BENCHES = (
    "bench_local",
    "bench_docker",
    "bench_rayup",
    "bench_kind",
    "bench_clouds",
    "bench_load",
    "bench_matrix",
)
#: Bound of one bench (the matrix runs the suites twice).
BENCH_TIMEOUT_S = 3 * 3600
#: The order of the table's rows: the modes as the README lists them.
MODE_ORDER = ("local", "docker", "vm", "autoscale", "kind-operator", "openshift", "aws", "ibm")
KUBERNETES = ("kind-operator", "openshift")


@dataclass(frozen=True)
class Target:
    """A figure's goal: at most (``<=``) or at least (``>=``) ``value``, for some modes or all."""

    op: str
    value: float
    modes: tuple[str, ...] = ()  # empty: every mode

    def met(self, figure: float) -> bool:
        return figure <= self.value if self.op == "<=" else figure >= self.value

    def applies(self, mode: str) -> bool:
        return not self.modes or mode in self.modes

    def __str__(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {self.value:g}"


TARGETS = {
    "overhead": Target("<=", 1.10),
    "provision_vs_docker": Target("<=", 2.0, KUBERNETES),
    "teardown_vs_docker": Target("<=", 5.0, KUBERNETES),
    "load_vs_plain": Target(">=", 0.9),
    "sessions_vs_plain": Target(">=", 0.9),
    "matrix_ratio": Target("<=", 0.7),
}
#: Where a per-mode figure comes from, first found wins.
SOURCES = {
    "overhead": ("bench_local", "bench_docker"),
    "timing": ("bench_kind", "bench_rayup", "bench_clouds"),
    "load": ("bench_load",),
    "matrix": ("bench_matrix",),
}


def run_bench(name: str) -> dict[str, Any]:
    """Run one bench; its exit, seconds and figures (or why there are none)."""
    OUT.mkdir(parents=True, exist_ok=True)
    figures, log = OUT / f"{name}.json", OUT / f"{name}.log"
    figures.unlink(missing_ok=True)  # a figure left from an earlier run must not count
    print(f"=== {name}", flush=True)
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / f"{name}.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, FIGURES_ENV: str(figures)},
        )
        assert proc.stdout is not None
        deadline = t0 + BENCH_TIMEOUT_S
        for text in proc.stdout:  # shown as it comes, kept for the table's "why"
            print(text, end="", flush=True)
            out.write(text)
            if time.monotonic() > deadline:
                proc.kill()
                out.write(f"\n(killed after {BENCH_TIMEOUT_S:.0f} s)\n")
        code = proc.wait()
    status = {"exit": code, "seconds": round(time.monotonic() - t0, 1)}
    (OUT / f"{name}.status.json").write_text(json.dumps(status) + "\n")
    return status | load_figures(name)


def load_figures(name: str) -> dict[str, Any]:
    path = OUT / f"{name}.json"
    if not path.exists():
        log = OUT / f"{name}.log"
        tail = log.read_text().strip().splitlines()[-3:] if log.exists() else []
        return {"figures": None, "why": " / ".join(tail) or "it wrote no figures"}
    return {"figures": json.loads(path.read_text())}


# --- The tables ----------------------------------------------------------------------------


class Table:
    """Every bench's figures, looked up by mode and figure, and the verdicts they make."""

    def __init__(self, benches: dict[str, dict[str, Any]]) -> None:
        self.benches = benches
        self.verdicts: list[dict[str, Any]] = []

    def modes_of(self, bench: str) -> dict[str, dict[str, Any]]:
        doc = self.benches.get(bench, {}).get("figures") or {}
        return dict(doc.get("modes") or {})

    def find(self, kind: str, mode: str, key: str) -> tuple[Any, str]:
        for bench in SOURCES[kind]:
            value = self.modes_of(bench).get(mode, {}).get(key)
            if value is not None:
                return value, bench
        return None, ""

    def why_missing(self, kind: str) -> str:
        for bench in SOURCES[kind]:
            state = self.benches.get(bench)
            if state is None:
                return f"{bench} was not run"
            if state.get("figures") is None:
                return f"{bench} exited {state.get('exit')}: {state.get('why', '')}"
            failed = (state["figures"].get("failed") or {}).values()
            if failed:
                return f"{bench}: " + "; ".join(failed)
        return f"no bench measures it ({', '.join(SOURCES[kind])} do not cover this mode)"

    def judge(self, mode: str, name: str, value: Any, detail: str = "", why: str = "") -> str:
        """The cell for ``value`` beside its target, recording the verdict."""
        target = TARGETS.get(name)
        if target is None or not target.applies(mode):
            return "—" if value is None else f"{value:g}"
        if value is None:
            self.verdicts.append(
                {"mode": mode, "figure": name, "target": str(target), "met": None, "why": why}
            )
            return f"not measured ({target})"
        met = target.met(float(value))
        self.verdicts.append(
            {
                "mode": mode,
                "figure": name,
                "value": value,
                "target": str(target),
                "met": met,
                "why": "" if met else detail,
            }
        )
        return f"{value:.2f} {'✓' if met else '✗'}"

    def modes(self) -> list[str]:
        seen = {m for bench in self.benches for m in self.modes_of(bench)}
        for state in self.benches.values():  # a mode a bench failed on still gets its row
            seen |= set((state.get("figures") or {}).get("failed") or {})
        return [m for m in MODE_ORDER if m in seen] + sorted(seen - set(MODE_ORDER))


def time_rows(t: Table) -> list[str]:
    rows = [
        f"| mode | harness overhead vs raw commands ({TARGETS['overhead']}) | provision (3 nodes) "
        f"| vs docker | teardown | vs docker | bench |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in t.modes():
        overhead, o_src = t.find("overhead", mode, "overhead")
        what = t.modes_of(o_src).get(mode, {}) if o_src else {}
        detail = (
            f"{what.get('overhead_harness_s')} s vs {what.get('overhead_raw_s')} s raw: {what.get('overhead_what')}"
            if what
            else ""
        )
        cell = t.judge(mode, "overhead", overhead, detail, t.why_missing("overhead"))
        up, src = t.find("timing", mode, "provision_s")
        down, _ = t.find("timing", mode, "teardown_s")
        figures = t.modes_of(src).get(mode, {}) if src else {}
        phases = figures.get("phases_s") or {}
        breakdown = ", ".join(
            f"{k.removesuffix('_s').replace('_', ' ')} {v:g} s" for k, v in phases.items()
        )
        up_vs = figures.get("provision_vs_docker")
        down_vs = figures.get("teardown_vs_docker")
        if up_vs is None and "provision_vs_vm" in figures:
            vm = t.modes_of("bench_rayup").get("vm", {}).get("provision_vs_docker")
            up_vs = round(figures["provision_vs_vm"] * vm, 2) if vm else None
            vm_down = t.modes_of("bench_rayup").get("vm", {}).get("teardown_vs_docker")
            down_vs = round(figures["teardown_vs_vm"] * vm_down, 2) if vm_down else None
        miss = t.why_missing("timing")
        up_detail = (
            f"{up} s; docker's in the same run {round(up / up_vs, 1) if up and up_vs else '?'} s"
            + (f"; phases: {breakdown}" if breakdown else "")
        )
        down_detail = f"{down} s; docker's in the same run {round(down / down_vs, 1) if down and down_vs else '?'} s"
        rows.append(
            f"| {mode} | {cell} | {_s(up)} | {t.judge(mode, 'provision_vs_docker', up_vs, up_detail, miss)} "
            f"| {_s(down)} | {t.judge(mode, 'teardown_vs_docker', down_vs, down_detail, miss)} | {src or '—'} |"
        )
    return rows


def matrix_rows(t: Table) -> list[str]:
    rows = [
        "| mode | nodes | provision | vs docker | teardown | vs docker | harness peak memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in t.modes():
        f = t.modes_of("bench_matrix").get(mode)
        if not f:
            continue
        rows.append(
            f"| {mode} | {f.get('matrix_nodes') or '?'} | {_s(f.get('matrix_provision_s'))} "
            f"| {_x(f.get('matrix_provision_vs_docker'))} | {_s(f.get('matrix_teardown_s'))} "
            f"| {_x(f.get('matrix_teardown_vs_docker'))} | {_mib(f.get('harness_peak_mib'))} |"
        )
    doc = (t.benches.get("bench_matrix") or {}).get("figures") or {}
    run = doc.get("matrix")
    if not run:
        t.judge("matrix", "matrix_ratio", None, why=t.why_missing("matrix"))
        return [f"Not measured: {t.why_missing('matrix')}"]
    detail = (
        f"serial {run['serial_seconds']:.0f} s with the CPUs {run['serial_cpu_busy']:.0%} busy; "
        f"-n {run['workers']} {run['parallel_seconds']:.0f} s with them {run['parallel_cpu_busy']:.0%} busy"
    )
    verdict = t.judge("matrix", "matrix_ratio", run["ratio"], detail)
    head = [
        f"`make test`'s suites line, serial: **{run['serial_seconds']:.0f} s** "
        f"(exit {run['serial_exit']}, {_outcomes(run['serial_outcomes'])}, CPUs {run['serial_cpu_busy']:.0%} busy); "
        f"with `-n {run['workers']} --dist loadgroup`: **{run['parallel_seconds']:.0f} s** "
        f"(exit {run['parallel_exit']}, {_outcomes(run['parallel_outcomes'])}, CPUs {run['parallel_cpu_busy']:.0%} busy). "
        f"-n / serial = **{verdict}** (target {TARGETS['matrix_ratio']}).",
        "",
        "Per mode, from the serial run (each mode's own node count; the harness's peak is the "
        "pytest process's own, reset between modes):",
        "",
    ]
    return head + rows


def load_rows(t: Table) -> list[str]:
    doc = (t.benches.get("bench_load") or {}).get("figures") or {}
    rows = [
        f"| mode | SPREAD tasks | one session, tasks/s | plain script | harness / plain ({TARGETS['load_vs_plain']}) "
        f"| sessions at once | tasks/s | plain | harness / plain ({TARGETS['sessions_vs_plain']}) "
        "| each node's peak memory | pytest's peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in t.modes():
        f = t.modes_of("bench_load").get(mode)
        if not f:
            if mode in (doc.get("failed") or {}):
                rows.append(f"| {mode} | failed: {doc['failed'][mode]} |||||||||")
            continue
        one_why = f"harness {f['load_tasks_per_s']} vs plain {f['load_plain_tasks_per_s']} tasks/s"
        one = t.judge(mode, "load_vs_plain", f["load_vs_plain"], one_why)
        many_why = f"harness {f['sessions_tasks_per_s']} vs plain {f['sessions_plain_tasks_per_s']} tasks/s"
        many = t.judge(mode, "sessions_vs_plain", f["sessions_vs_plain"], many_why)
        nodes = ", ".join(
            f"{_mib(m)}" if m is not None else "n/a (one cgroup for all nodes)"
            for m in (f.get("node_peak_mib") or {}).values()
        )
        rows.append(
            f"| {mode} | {f['load_tasks']:,} | {f['load_tasks_per_s']:,.0f} | {f['load_plain_tasks_per_s']:,.0f} "
            f"| {one} | {f['load_sessions']} | {f['sessions_tasks_per_s']:,.0f} "
            f"| {f['sessions_plain_tasks_per_s']:,.0f} | {many} | {nodes} | {_mib(f.get('load_harness_peak_mib'))} |"
        )
    return rows


def unmet_lines(t: Table) -> list[str]:
    lines = []
    for v in t.verdicts:
        if v["met"] is None:
            lines.append(
                f"- **{v['mode']}, {v['figure']}** (target {v['target']}): not measured — {v['why']}"
            )
        elif not v["met"]:
            lines.append(
                f"- **{v['mode']}, {v['figure']}** = {v['value']:g} (target {v['target']}): {v['why']}"
            )
    return lines or ["Every target is met."]


def render(
    benches: dict[str, dict[str, Any]], host: dict[str, Any], notes: str
) -> tuple[str, list[dict[str, Any]]]:
    t = Table(benches)
    timing, matrix, load = time_rows(t), matrix_rows(t), load_rows(t)
    status = [
        f"| {name} | {'ok' if b.get('exit') == 0 else 'exit ' + str(b.get('exit'))} | {b.get('seconds', 0):.0f} s |"
        for name, b in benches.items()
    ]
    md = [
        "# Bench results",
        "",
        "Written by `make bench` (`bench/run_all.py`); every figure is in `bench/results.json`.",
        f"Measured {host['date']} on {host['nproc']} CPUs ({host['cpu']}), {host['memory_gib']} GiB of "
        f"memory, kernel {host['kernel']}, Python {host['python']}; warm caches (node images, the "
        "kind toolchain), one mode at a time unless it says `-n`.",
        "",
        "## Targets not met or not measured",
        "",
        *unmet_lines(t),
        *(["", notes.strip()] if notes.strip() else []),
        "",
        "## Harness overhead, provision and teardown",
        "",
        "Overhead: the harness's time over the same work done with the raw commands "
        "(`bench_local`: the whole `pytest -k spread` run; `bench_docker`: the provision). "
        "Provision and teardown: each mode's provisioner alone, 3 nodes, beside docker's in the "
        "same bench run (aws and ibm: beside vm's, times vm's ratio to docker). ✓ met, ✗ not met; "
        "— no target for that mode.",
        "",
        *timing,
        "",
        "## The matrix: `-n` against serial",
        "",
        *matrix,
        "",
        "## Load through the forward",
        "",
        "`bench_load`: on one cluster per mode (3 nodes) and one forward of its client port, the "
        "harness's checks (`--ray-spread-tasks`, `--ray-client-sessions`) beside a plain Ray "
        "script doing the same work; the sessions share the tasks. Node memory: each node's "
        "cgroup peak after the load, read by a task pinned to it.",
        "",
        *load,
        "",
        "## Benches",
        "",
        "| bench | exit | time |",
        "|---|---|---|",
        *status,
        "",
    ]
    return "\n".join(md), t.verdicts


def _s(value: Any) -> str:
    return "—" if value is None else f"{value:g} s"


def _x(value: Any) -> str:
    return "—" if value is None else f"{value:g}x"


def _mib(value: Any) -> str:
    return "—" if value is None else f"{value:,} MiB"


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def write(benches: dict[str, dict[str, Any]], notes: str) -> None:
    host = machine()
    md, verdicts = render(benches, host, notes)
    RESULTS_MD.write_text(md)
    targets = {k: str(v) for k, v in TARGETS.items()}
    doc = {"machine": host, "written": now(), "targets": targets, "verdicts": verdicts}
    doc["benches"] = benches
    RESULTS_JSON.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"wrote {RESULTS_MD} and {RESULTS_JSON}")


#: Why a target is not met, in words, where the figures alone do not say: kept by hand beside
#: the benches and copied into RESULTS.md under the list of targets not met.
NOTES_FILE = HERE / "NOTES.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benches (default: all)")
    parser.add_argument("--table-only", action="store_true", help="rebuild from bench/out/")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown bench(es) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    benches: dict[str, dict[str, Any]] = {}
    for name in names:
        if args.table_only:
            status = OUT / f"{name}.status.json"
            done = json.loads(status.read_text()) if status.exists() else {"exit": None}
            benches[name] = done | load_figures(name)
        else:
            benches[name] = run_bench(name)
    notes = NOTES_FILE.read_text() if NOTES_FILE.exists() else ""
    write(benches, notes)
    return 0 if all(b.get("exit") == 0 for b in benches.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
