"""The one way to run a command, and the one way to keep a helper process running.

:func:`run` logs the command line, bounds it, kills its whole process group on timeout (``ray
up`` leaves ssh/rsync children) and raises with the tail of its output. :class:`Background`
starts long-lived helpers (SSH tunnels, ``ray dashboard``, ``kubectl port-forward``) in their own
process group, waits (bounded) until they are ready, and reaps every one it started, by pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from provisioners.contract.base import Deadline, InventoryItem, ProvisionError
from provisioners.util.runstate import RUN_ENV
from provisioners.util.waits import wait_for

log = logging.getLogger("ray_conformance.run")

#: Process groups of the commands running now, from any thread: an interrupt reaches only the
#: main thread, which ends the others' commands with :func:`kill_running`.
_running: set[int] = set()
_running_lock = threading.Lock()


def kill_running() -> list[int]:
    """SIGKILL the process group of every command :func:`run_full` is running; their pids."""
    with _running_lock:
        pids = sorted(_running)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return pids


class CommandError(RuntimeError):
    """A command exited non-zero; the message names it and carries the tail of its output."""

    def __init__(self, message: str, *, returncode: int, output: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output = output


class CommandTimeout(ProvisionError):
    """A command did not finish within its bound; it and its children were killed."""


@dataclass(frozen=True)
class Completed:
    """A finished command: ``stdout`` alone, or with stderr merged in (``merge=True``)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def tail(text: str, lines: int = 15) -> str:
    """The last ``lines`` non-empty lines of ``text`` (what a one-screen error should quote)."""
    return "\n".join(text.strip().splitlines()[-lines:])


def tail_file(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, or a note that it cannot be read."""
    try:
        return tail(path.read_text(errors="replace"), lines)
    except OSError as exc:
        return f"({path}: {exc.strerror or exc})"


def run_full(
    argv: Sequence[str],
    timeout: float,
    *,
    what: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    log_file: Path | None = None,
    merge: bool = True,
    check: bool = True,
) -> Completed:
    """Run ``argv`` to completion within ``timeout`` seconds.

    ``env`` is laid over this process's environment. With ``merge`` stderr goes into stdout
    (what a person reading a log expects); without it, stderr is kept apart. Raises
    :class:`CommandTimeout` on timeout and, with ``check``, :class:`CommandError` on a non-zero
    exit; both name ``what`` (default: the program).
    """
    argv = [str(a) for a in argv]
    what = what or Path(argv[0]).name
    line = shlex.join(argv)
    log.debug("run (%.0f s bound): %s", timeout, line)
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            text=True,
            errors="replace",
            start_new_session=True,  # a timeout kills its children too
        )
    except OSError as exc:
        raise CommandError(
            f"{what}: cannot start {argv[0]}: {exc.strerror or exc}", returncode=-1, output=""
        ) from None
    with _running_lock:
        _running.add(proc.pid)
    try:
        out, err = proc.communicate(stdin, timeout=max(0.1, timeout))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        _append_log(log_file, line, out, err)
        raise CommandTimeout(
            f"{what} did not finish within {timeout:.0f} s; last output:\n{tail(out + (err or ''))}"
        ) from None
    except BaseException:
        # An interrupt or a harness limit: the command's own session would outlive us.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        with _running_lock:
            _running.discard(proc.pid)
    done = Completed(tuple(argv), proc.returncode, out, err or "", time.monotonic() - t0)
    _append_log(log_file, line, out, err)
    if check and proc.returncode != 0:
        raise CommandError(
            f"{what} exited {proc.returncode}:\n{tail(out + (err or ''))}",
            returncode=proc.returncode,
            output=out + (err or ""),
        )
    return done


def run(
    argv: Sequence[str],
    timeout: float,
    *,
    what: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    log_file: Path | None = None,
) -> str:
    """:func:`run_full` with stderr merged and the exit checked; returns the output."""
    return run_full(
        argv, timeout, what=what, env=env, stdin=stdin, cwd=cwd, log_file=log_file
    ).stdout


#: Runs of one ``pip download``: pip retries a dropped connection itself, not an answer cut
#: short or refused (a truncated JSON page from PyPI once ended a cold build).
DOWNLOAD_ATTEMPTS = 3


def pip_download(args: Sequence[str], timeout: float, *, what: str) -> None:
    """``pip download ARGS`` within ``timeout`` in all, run again when it fails (the files it
    already fetched stay in its ``-d`` directory); the last failure is raised."""
    argv = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", *args]
    deadline = Deadline.after(timeout, what)
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            run(argv, deadline.left(), what=what)
            return
        except CommandError as exc:
            if attempt == DOWNLOAD_ATTEMPTS or deadline.expired():
                raise
            log.warning(
                "%s failed (run %d of %d), running it again: %s",
                *(what, attempt, DOWNLOAD_ATTEMPTS, tail(exc.output, 3)),
            )


def _append_log(path: Path | None, line: str, out: str, err: str | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(f"$ {line}\n{out}{err or ''}\n")


def stop_group(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL what is left after ``grace``, reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            return os.waitpid(pid, os.WNOHANG)[0] != 0
        except ChildProcessError:  # not our child (or already reaped): ask the kernel
            return not _alive(pid)

    with contextlib.suppress(TimeoutError):
        wait_for(gone, timeout=grace, what=f"process group {pid} to exit", interval=0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Started:
    """A helper process :class:`Background` started; ``log`` holds its output."""

    pid: int
    what: str
    log: Path
    popen: subprocess.Popen[bytes] = field(repr=False)

    def exited(self) -> int | None:
        return self.popen.poll()


class Background:
    """Long-lived helper processes of one mode, always reaped: by ``stop``, ``close`` or exit.

    ``start`` is a context manager: it yields once ``ready()`` is true (bounded, failing fast
    with the log's tail when the process exits first) and stops the process when the block
    ends. ``close`` stops whatever is still running (teardown), ``inventory`` lists it.
    """

    def __init__(self, run_id: str, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.run_id = run_id
        self.log_dir = log_dir
        # RC_RUN_ID marks the helper and its children as the run's, for a sweep after a crash.
        self.env = {RUN_ENV: run_id, **(env or {})}
        self._running: dict[int, Started] = {}

    def spawn(
        self, argv: Sequence[str], what: str, *, env: Mapping[str, str] | None = None
    ) -> Started:
        """Start ``argv`` in its own process group with output to a log in ``log_dir``."""
        argv = [str(a) for a in argv]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{what.replace(' ', '-').replace('/', '-')}-{time.time_ns()}.log"
        log.debug("start %s: %s", what, shlex.join(argv))
        with path.open("wb") as out:
            out.write(f"$ {shlex.join(argv)}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env, **(env or {})},
                start_new_session=True,  # its children (ssh of `ray dashboard`) share the group
            )
        started = Started(popen.pid, what, path, popen)
        self._running[popen.pid] = started
        return started

    def wait_ready(self, started: Started, ready: Callable[[], bool], timeout: float) -> None:
        """Wait until ``ready()``; fail fast, quoting the log, if the process exits first."""

        def died() -> str | None:
            code = started.exited()
            if code is None:
                return None
            return f"{started.what} exited {code}: {tail_file(started.log, 8)}"

        try:
            wait_for(
                ready,
                timeout=timeout,
                what=f"{started.what} to be ready",
                interval=0.1,
                give_up=died,
            )
        except (TimeoutError, ProvisionError) as exc:
            self.stop(started)
            raise ProvisionError(f"{exc} (log: {started.log})") from None

    @contextlib.contextmanager
    def start(
        self,
        argv: Sequence[str],
        what: str,
        *,
        ready: Callable[[], bool],
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> Iterator[Started]:
        """Spawn, wait until ready, yield, and stop the process when the block ends."""
        started = self.spawn(argv, what, env=env)
        try:
            self.wait_ready(started, ready, timeout)
            yield started
        finally:
            self.stop(started)

    def stop(self, started: Started, grace: float = 5.0) -> None:
        stop_group(started.pid, grace)
        self._running.pop(started.pid, None)

    def close(self) -> None:
        """Stop every helper still running (teardown; idempotent)."""
        for started in list(self._running.values()):
            self.stop(started)

    def inventory(self) -> list[InventoryItem]:
        return [
            InventoryItem("process", str(s.pid), self.run_id, s.what)
            for s in self._running.values()
            if _alive(s.pid)
        ]
