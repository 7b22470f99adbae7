"""What every bench hands to the table: its figures as JSON, and the machine they were taken on.

A bench calls :func:`save` once at its end with ``{mode: {figure: value}}`` (and notes);
``bench/run_all.py`` (``make bench``) points ``RC_BENCH_FIGURES`` at a file per bench and
gathers them into ``bench/results.json`` and ``bench/RESULTS.md``. Run alone, a bench still
prints its own lines and writes its figures under ``bench/out/``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
#: Where ``make bench`` wants this bench's figures (one file per bench).
FIGURES_ENV = "RC_BENCH_FIGURES"
MIB = 1024**2


def save(bench: str, modes: dict[str, dict[str, Any]], **extra: Any) -> Path:
    """Write ``{"bench", "modes", ...extra}``; returns the file written."""
    path = Path(os.environ.get(FIGURES_ENV) or OUT / f"{bench}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"bench": bench, "taken": now(), "modes": modes, **extra}
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"figures: {path}")
    return path


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict[str, Any]:
    """nproc, memory, kernel, CPU model and Docker engine of this machine."""
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(
        next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal"))
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(total_kib / 1024**2, 1),
        "kernel": platform.release(),
        "cpu": cpu,
        "python": platform.python_version(),
        "date": now(),
    }
