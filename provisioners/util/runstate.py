"""What a run keeps on this machine outside its report: its lock, its notes and its secrets.

One directory per run, ``<cache>/ray-conformance/runs/<run id>/`` (readable by this user only):

* ``run.lock``: every process of a live run (the pytest controller, its xdist workers, a script
  that provisions a mode) holds a shared ``flock`` on it for as long as it may create or use
  the run's resources. ``sweep`` takes it exclusively before it touches the run, so a run in
  progress is never swept, and a run killed by SIGKILL (which drops its locks) is;
* ``run.json``: the first holder's pid, start time and command line, for people and
  ``sweep --older-than``;
* ``ledger.jsonl``: notes the modes write *before* they create what a label cannot find again
  (a firewall rule, a cloud key pair and its region, the kubeconfig of a cluster the run did not
  make), so a sweep after a crash knows where to look;
* ``private/<mode>/``: keys, kubeconfigs, configs holding credentials and Ray's own temp files
  (``/tmp/ray-config-*`` would otherwise be left world-readable in ``/tmp``), never in the
  report dir.

Processes a run starts carry :data:`RUN_ENV` in their environment (Ray's own children inherit
it), which is how a sweep finds them after their parent died.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

#: Environment variables naming the run (and the mode) in every process the run starts.
RUN_ENV = "RC_RUN_ID"
MODE_ENV = "RC_MODE"
LOCK_FILE = "run.lock"
RECORD_FILE = "run.json"
LEDGER_FILE = "ledger.jsonl"
PRIVATE_DIR = "private"


class RunBusy(RuntimeError):
    """The run's lock is held exclusively: a sweep is removing the run right now."""


def project_cache() -> Path:
    """The project's one cache directory (``$XDG_CACHE_HOME`` respected): runs, images, tools."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ray-conformance"


def runs_root() -> Path:
    """Where every run's directory lives."""
    return project_cache() / "runs"


def run_dir(run_id: str) -> Path:
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise ValueError(f"not a run id: {run_id!r}")
    return runs_root() / run_id


def _private_mkdir(path: Path) -> Path:
    if not path.parent.exists():
        _private_mkdir(path.parent)
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)  # mkdir's mode is masked by the umask; and an older dir may be wider
    return path


@dataclass
class _Held:
    handle: IO[str]
    count: int


_held: dict[str, _Held] = {}  # a lock belongs to the process, so its bookkeeping does too
_guard = threading.Lock()


def hold(run_id: str, *, report_dir: Path | None = None) -> None:
    """Hold the run's shared lock in this process (counted: each ``hold`` needs a ``release``).

    Raises :class:`RunBusy` while a sweep holds the run (its id is being removed).
    """
    with _guard:
        held = _held.get(run_id)
        if held is not None:
            held.count += 1
            return
        directory = _private_mkdir(run_dir(run_id))
        handle = (directory / LOCK_FILE).open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunBusy(
                f"run {run_id}: `python -m provisioners sweep` is removing it; use another run id"
            ) from None
        _held[run_id] = _Held(handle, 1)
        record = directory / RECORD_FILE
        if not record.exists():  # the first process of the run (xdist workers come later)
            _write_private(
                record,
                json.dumps(
                    {
                        "run_id": run_id,
                        "pid": os.getpid(),
                        "started": time.time(),
                        "argv": sys.argv,
                        "report_dir": str(report_dir) if report_dir else None,
                    }
                ),
            )


def release(run_id: str, *, tidy: bool = True) -> None:
    """Undo one :func:`hold`; the last one drops the lock.

    With ``tidy`` the run's directory goes too, when no other process holds the run and its
    notes say nothing was kept or left behind (``kept``, ``leftovers``).
    """
    tidy = tidy and not notes(run_id, "kept") and not notes(run_id, "leftovers")
    with _guard:
        held = _held.get(run_id)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[run_id]
        try:
            if tidy:
                # Only with the run to itself: an xdist worker may still need the secrets.
                with contextlib.suppress(BlockingIOError):
                    fcntl.flock(held.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    shutil.rmtree(run_dir(run_id), ignore_errors=True)
        finally:
            held.handle.close()  # drops the lock


def _tidy_unheld(run_id: str) -> None:
    """Remove the directory of a run nobody holds and that kept nothing (a mode driven by hand,
    without :func:`hold`, has nothing else to remove it)."""
    if holds(run_id) or notes(run_id, "kept") or notes(run_id, "leftovers"):
        return
    with exclusive(run_id) as mine:
        if mine:
            shutil.rmtree(run_dir(run_id), ignore_errors=True)


def holds(run_id: str) -> bool:
    """Whether this process holds the run."""
    return run_id in _held


@contextlib.contextmanager
def exclusive(run_id: str) -> Iterator[bool]:
    """The run to the caller alone (True), or False when a live process holds it.

    A run with no directory is dead by definition: nothing of a live run is made before its
    lock is held.
    """
    path = run_dir(run_id) / LOCK_FILE
    if not path.exists():
        yield True
        return
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def is_live(run_id: str) -> bool:
    with exclusive(run_id) as mine:
        return not mine


def record(run_id: str) -> dict[str, Any]:
    """The run's ``run.json`` ({} when absent or unreadable)."""
    try:
        data = json.loads((run_dir(run_id) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_ids() -> list[str]:
    """Every run that has a directory here, live or not."""
    root = runs_root()
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    except OSError:
        return []


def note(run_id: str, mode: str, kind: str, **data: Any) -> None:
    """Write down, before creating it, what a sweep could not find again by label."""
    directory = _private_mkdir(run_dir(run_id))
    line = json.dumps({"mode": mode, "kind": kind, **data}, default=str) + "\n"
    path = directory / LEDGER_FILE
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def notes(run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The run's ledger, oldest first (only ``kind`` when given)."""
    try:
        lines = (run_dir(run_id) / LEDGER_FILE).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and (kind is None or entry.get("kind") == kind):
                out.append(entry)
    return out


def private_dir(run_id: str, mode: str) -> Path:
    """The mode's 0700 directory for the run's secrets, outside any report (created)."""
    _private_mkdir(run_dir(run_id))
    _private_mkdir(run_dir(run_id) / PRIVATE_DIR)
    return _private_mkdir(run_dir(run_id) / PRIVATE_DIR / mode)


def private_path(run_id: str, mode: str) -> Path:
    """Where :func:`private_dir` is (not created)."""
    return run_dir(run_id) / PRIVATE_DIR / mode


def remove_private_dir(run_id: str, mode: str) -> None:
    """Remove the mode's secrets (teardown); the run's directory too when nobody holds it."""
    shutil.rmtree(private_path(run_id, mode), ignore_errors=True)
    _tidy_unheld(run_id)


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by this user only (never wider, not even briefly)."""
    return _write_private(path, text)


def _write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path


def run_env(run_id: str, mode: str = "") -> dict[str, str]:
    """The environment entries that mark a process as the run's (and the mode's)."""
    return {RUN_ENV: run_id, **({MODE_ENV: mode} if mode else {})}


def sweep_command(run_id: str, mode: str = "") -> str:
    """``sweep`` of one run (and mode) as a person runs it in a clean shell: this interpreter
    by its absolute path, so neither PATH nor a virtualenv's activation matter."""
    argv = [sys.executable, "-m", "provisioners", "sweep", "--run-id", run_id]
    return shlex.join(argv + (["--mode", mode] if mode else []))
