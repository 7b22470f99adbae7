"""The whole matrix serially and with ``-n``, one after the other: wall times and their ratio.

    .venv/bin/python bench/bench_matrix.py [--workers N] [--modes a,b]

Runs the suites as ``make test`` does (its flags, read from the Makefile: every mode this
machine can run, the clouds and OpenShift rehearsed, the node image built here) twice:
serially, then with ``-n N --dist loadgroup`` (N: this machine's cores). Target: -n / serial <= 0.7. From the serial run, per
mode: provision and teardown seconds and node count (the report's mode records) and the pytest
process's peak memory (bench/peak_memory.py). For each run, the share of the machine's CPU time
that was busy (/proc/stat): a serial run that already keeps the cores busy leaves -n little to
gain. The one-time builds (``python -m provisioners prepare``) run first, untimed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import MIB, save
from peak_memory import ENV as PEAK_ENV

from provisioners.util.runner import run_full

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.7
#: Bound of one whole matrix run (make test's suites take about 15 minutes warm).
RUN_TIMEOUT_S = 5400.0


def matrix_flags() -> list[str]:
    """The flags of `make test`'s suites line (the Makefile's SUITE_FLAGS, one per line)."""
    out = run_full(["make", "-s", "--no-print-directory", "suite-flags"], 60, cwd=ROOT).stdout
    return out.splitlines()


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def matrix(flags: list[str], extra: list[str], report: Path) -> dict[str, Any]:
    """One run of the suites: wall seconds, CPU busy share, outcomes, and the report dir."""
    peaks = report.with_suffix(".peak.jsonl")
    busy0, total0 = cpu_times()
    t0 = time.monotonic()
    proc = run_full(
        [
            sys.executable,
            "-m",
            "pytest",
            *flags,
            *extra,
            "-p",
            "peak_memory",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--ray-report-dir={report}",
        ],
        RUN_TIMEOUT_S,
        cwd=ROOT,
        check=False,
        env={"PYTHONPATH": str(Path(__file__).resolve().parent), PEAK_ENV: str(peaks)},
    )
    seconds = time.monotonic() - t0
    busy1, total1 = cpu_times()
    print(proc.stdout[-1500:], flush=True)
    doc = json.loads((report / "results.json").read_text())
    outcomes = collections.Counter(r["outcome"] for r in doc["results"])
    # The report goes with the temp dir: what failed is kept with the figures.
    failures = [
        {"nodeid": r["nodeid"], "message": str(r.get("message", ""))[:1500]}
        for r in doc["results"]
        if r["outcome"] in ("failed", "error")
    ]
    for failure in failures:
        print(f"FAILED {failure['nodeid']}: {failure['message']}", flush=True)
    lines = peaks.read_text().splitlines() if peaks.exists() else []
    return {
        "seconds": round(seconds, 1),
        "cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
        "exit": proc.returncode,
        "outcomes": dict(outcomes),
        "failures": failures,
        "modes": doc["modes"],
        "peaks": [json.loads(x) for x in lines],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="-n (cores)")
    parser.add_argument("--modes", default="", help="--ray-modes (default: every mode)")
    args = parser.parse_args()
    selected = [f"--ray-modes={args.modes}"] if args.modes else []
    run_full([sys.executable, "-m", "provisioners", "prepare"], RUN_TIMEOUT_S, cwd=ROOT)
    with tempfile.TemporaryDirectory(prefix="rc-bench-matrix-") as tmp:
        flags = matrix_flags()
        serial = matrix(flags, selected, Path(tmp) / "serial")
        print(f"serial: {serial['seconds']:.0f} s, {serial['outcomes']}", flush=True)
        extra = [*selected, "-n", str(args.workers), "--dist", "loadgroup"]
        parallel = matrix(flags, extra, Path(tmp) / "parallel")
        print(f"-n {args.workers}: {parallel['seconds']:.0f} s, {parallel['outcomes']}", flush=True)
    modes: dict[str, dict[str, Any]] = {}
    for record in serial["modes"]:
        if record.get("provision_seconds") is None:
            continue  # skipped here: the mode's prerequisites are missing
        modes[record["mode"]] = {
            "matrix_provision_s": record["provision_seconds"],
            "matrix_teardown_s": record.get("teardown_seconds"),
            "matrix_nodes": (record.get("handle") or {}).get("expected_nodes"),
        }
    for peak in serial["peaks"]:
        if peak["mode"] in modes:
            modes[peak["mode"]]["harness_peak_mib"] = round(peak["peak_rss_bytes"] / MIB)
    docker = modes.get("docker", {})
    for figures in modes.values():
        for what in ("provision", "teardown"):
            base, value = docker.get(f"matrix_{what}_s"), figures.get(f"matrix_{what}_s")
            if base and value is not None:
                figures[f"matrix_{what}_vs_docker"] = round(value / base, 2)
    ratio = parallel["seconds"] / serial["seconds"]
    verdict = "ok" if ratio <= TARGET else f"OVER the {TARGET} target"
    print(
        f"matrix: serial {serial['seconds']:.0f} s (CPU {serial['cpu_busy']:.0%} busy), "
        f"-n {args.workers} {parallel['seconds']:.0f} s (CPU {parallel['cpu_busy']:.0%} busy): "
        f"{ratio:.2f} ({verdict})"
    )
    for mode, figures in modes.items():
        print(f"  {mode:<14} {figures}")
    run = {
        "workers": args.workers,
        "ratio": round(ratio, 3),
        **{
            f"{name}_{key}": run[key]
            for name, run in (("serial", serial), ("parallel", parallel))
            for key in ("seconds", "cpu_busy", "exit", "outcomes", "failures")
        },
    }
    save("bench_matrix", modes, matrix=run, target=TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
