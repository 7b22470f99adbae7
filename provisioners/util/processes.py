"""Processes a run started on this machine, found by id, never by a broad name.

A run's Ray processes are its own when they are in a process group it started or when their
arguments name its per-run temp dir (Ray re-parents some workers out of the group).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

import psutil

from provisioners.contract.base import ProvisionError
from provisioners.util.runner import run_full
from provisioners.util.waits import WaitTimeout, wait_for


def ray_cli() -> str | None:
    """The ``ray`` CLI of the interpreter running the harness (same Ray as the suites), else PATH's."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray")


def node_interpreter(pid: int) -> str:
    """The Python a running ``ray start`` (``pid``) was started with: its nodes' interpreter.

    The path as invoked (a venv's ``bin/python``), not the binary it resolves to, which would
    run without the venv's packages.
    """
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error as exc:
        raise ProvisionError(
            f"cannot read the command line of `ray start` (pid {pid}): {exc}"
        ) from None
    if not argv or "python" not in Path(argv[0]).name:
        raise ProvisionError(f"`ray start` (pid {pid}) runs {argv[:1]}, not a Python interpreter")
    return argv[0]


#: Printed by a node's interpreter: its Ray and its Python major.minor.
_VERSIONS = 'import sys, ray; print("VERSIONS", ray.__version__, "%d.%d" % sys.version_info[:2])'


def interpreter_versions(python: str, timeout: float) -> tuple[str, str]:
    """(Ray version, Python major.minor) of ``python``, asked of that interpreter itself."""
    out = run_full(
        [python, "-c", _VERSIONS], timeout, what=f"{python}: Ray and Python versions"
    ).stdout
    for line in out.splitlines():
        if line.startswith("VERSIONS "):
            _, ray_version, python_version = line.split()
            return ray_version, python_version
    raise ProvisionError(f"{python} printed no versions:\n{out[-500:]}")


def env_with_interpreter_first() -> dict[str, str]:
    """This environment with the harness interpreter's bin dir first on PATH.

    Job entrypoints run ``python`` from the node's PATH; it must be the cluster's interpreter.
    """
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def run_processes(groups: Iterable[int] = (), marker: str | None = None) -> list[psutil.Process]:
    """Live processes in one of ``groups`` or whose arguments contain ``marker``."""
    pgids = set(groups)
    if not pgids and not marker:
        return []
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            in_group = bool(pgids) and os.getpgid(proc.pid) in pgids
            names_marker = marker is not None and any(
                marker in arg for arg in proc.info["cmdline"] or []
            )
            if in_group or names_marker:
                found.append(proc)
    return found


def kill_all(procs: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """SIGKILL exactly these processes; return the ones still alive after ``timeout``."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    # Poll briskly rather than psutil.wait_procs (exponential backoff, ~1.5 s for a node's
    # processes): a zombie awaiting its reaper holds no port or file, so it counts as gone.
    alive = list(procs)

    def all_gone() -> bool:
        alive[:] = [p for p in alive if _running(p)]
        return not alive

    with contextlib.suppress(WaitTimeout):
        wait_for(all_gone, timeout=timeout, what="killed processes to exit", interval=0.05)
    return alive


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
