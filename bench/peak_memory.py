"""A pytest plugin for the benches: the harness's own peak memory, per mode and per process.

Loaded with ``-p peak_memory`` (``bench/`` on ``PYTHONPATH``) and ``RC_PEAK_MEMORY=<file>``.
Each process (the main one, every xdist worker) appends one JSON line per mode it tore down,
``{"mode", "pid", "peak_rss_bytes"}``, and one at its end with ``"mode": null`` and the
highest figure it saw. Linux's peak RSS (VmHWM) is reset after each mode (``5`` into
``/proc/self/clear_refs``), so a mode's figure covers its own provision, checks and teardown,
not the modes before it. Only the pytest process: scripts and CLIs it runs are not counted.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

ENV = "RC_PEAK_MEMORY"
_highest = 0


def peak_rss() -> int:
    """This process's peak resident set size since start or the last reset, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def _reset() -> None:
    # Kernels before 4.0 cannot: the figures then include the modes before.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _append(mode: str | None, peak: int) -> None:
    global _highest
    _highest = max(_highest, peak)
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"mode": mode, "pid": os.getpid(), "peak_rss_bytes": peak}) + "\n")


def pytest_ray_conformance_torn_down(mode: str, leftovers: list[Any]) -> None:
    _append(mode, peak_rss())
    _reset()


def pytest_unconfigure(config: Any) -> None:
    _append(None, max(_highest, peak_rss()))
