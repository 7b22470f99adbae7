"""Bounded waits and dashboard queries shared by provisioners and fixtures."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import filelock

from provisioners.contract.base import Deadline, ProvisionError

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A bounded wait ran out; the message says what was awaited and what was last seen."""


class WaitGaveUp(ProvisionError):
    """A wait stopped early: what it waited on can no longer come (a process died)."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    last_seen: Callable[[], str] | None = None,
    give_up: Callable[[], str | None] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None/False, at most ``timeout`` s.

    This is the project's only polling loop. Exceptions from ``probe`` count as "not yet" (a
    server still starting refuses connections); the last one is quoted in the timeout message.
    ``give_up`` is asked after each miss: a reason (the process that would answer has exited)
    ends the wait at once with :class:`WaitGaveUp` naming it, instead of waiting out the bound.
    """
    deadline = Deadline.after(timeout, what)
    last_error = ""
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        reason = give_up() if give_up is not None else None
        if reason:
            raise WaitGaveUp(f"gave up waiting for {what}: {reason}")
        if deadline.expired():
            seen = last_seen() if last_seen else last_error
            raise WaitTimeout(
                f"timed out after {timeout:.0f} s waiting for {what}"
                + (f"; last seen: {seen}" if seen else "")
            )
        time.sleep(min(interval, deadline.remaining()))


def http_json(url: str, timeout: float = 5.0) -> Any:
    """GET a URL and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def alive_nodes(
    dashboard_url: str, timeout: float = 5.0, *, view: str = "state"
) -> list[dict[str, Any]]:
    """Alive nodes as dicts with node_id, hostname, ip.

    ``view="state"`` asks the state API (``/api/v0/nodes``), which reads the GCS directly and
    sees a new node about a second before the dashboard's own ``/nodes?view=summary``
    (``view="summary"``), which is what a person sees in the dashboard.
    """
    base = dashboard_url.rstrip("/")
    if view == "state":
        data = http_json(f"{base}/api/v0/nodes?limit=10000", timeout=timeout)
        return [
            {
                "node_id": n.get("node_id", ""),
                "hostname": n.get("node_name", ""),
                "ip": n.get("node_ip", ""),
            }
            for n in data["data"]["result"]["result"]
            if n.get("state") == "ALIVE"
        ]
    data = http_json(f"{base}/nodes?view=summary", timeout=timeout)
    out = []
    for node in data["data"]["summary"]:
        raylet = node.get("raylet") or {}
        if raylet.get("state") == "ALIVE":
            out.append(
                {
                    "node_id": raylet.get("nodeId", ""),
                    "hostname": node.get("hostname", ""),
                    "ip": node.get("ip", ""),
                }
            )
    return out


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a new listener could bind the port (nothing holds it any more)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Closed connections linger in TIME_WAIT; that is not a listener still holding the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


#: Lists the alive Ray nodes: dicts with at least ``ip``, ``hostname`` and ``node_id``.
NodeLister = Callable[[], list[dict[str, Any]]]


class NodesTimeout(WaitTimeout):
    """:func:`wait_for_nodes` ran out; ``never_joined`` holds the expected addresses not alive."""

    def __init__(self, message: str, never_joined: list[str]) -> None:
        super().__init__(message)
        self.never_joined = never_joined


def dashboard_lister(
    dashboard_url: str, *, view: str = "state", timeout: float = 5.0
) -> NodeLister:
    """The alive nodes as the dashboard at ``dashboard_url`` lists them (see :func:`alive_nodes`)."""
    return lambda: alive_nodes(dashboard_url, timeout, view=view)


def wait_for_nodes(
    nodes: str | NodeLister,
    count: int,
    *,
    timeout: float,
    at_least: bool = False,
    expected: Mapping[str, str] | None = None,
    on_change: Callable[[int], None] | None = None,
    give_up: Callable[[], str | None] | None = None,
    where: str | None = None,
    view: str = "state",
    interval: float = 0.25,  # a local query; finer polling shaves the wait that gates every suite
) -> list[dict[str, Any]]:
    """Wait until ``count`` Ray nodes are alive (at least ``count`` with ``at_least``); return them.

    ``nodes`` lists the alive nodes: a :data:`NodeLister` (a probe over ssh, say), or a dashboard
    URL whose ``view`` (:func:`alive_nodes`) is asked. ``expected`` maps the address (ip or
    hostname) of each node that must be among them to how the timeout names it when it never
    joined. ``on_change`` is told the count each time it changes (from 0). ``give_up`` is
    :func:`wait_for`'s: a reason ends the wait at once (a node process exited). ``where`` says
    where the nodes are listed, for the messages. A timeout raises :class:`NodesTimeout` naming
    the alive nodes, each expected one that never joined and the last probe error.
    """
    if isinstance(nodes, str):
        list_nodes = dashboard_lister(nodes, view=view)
        where = f"at {nodes} ({view} view)" if where is None else where
    else:
        list_nodes = nodes
    named = dict(expected or {})
    last: dict[str, Any] = {"alive": [], "count": 0, "error": ""}

    def never_joined(alive: list[dict[str, Any]]) -> list[str]:
        present = {n["ip"] for n in alive} | {n["hostname"] for n in alive}
        return [address for address in named if address not in present]

    def probe() -> list[dict[str, Any]] | None:
        try:
            alive = list_nodes()
        except Exception as exc:
            # Ssh probes fail with pages of output; their last line says why.
            lines = str(exc).strip().splitlines() or [""]
            last["error"] = f"{type(exc).__name__}: {lines[-1][:200]}"
            raise
        last.update(alive=alive, error="")
        if len(alive) != last["count"]:
            last["count"] = len(alive)
            if on_change:
                on_change(len(alive))
        enough = len(alive) >= count if at_least else len(alive) == count
        return alive if enough and not never_joined(alive) else None

    def describe() -> str:
        alive: list[dict[str, Any]] = last["alive"]
        missing = [named[a] for a in never_joined(alive)]
        if (unnamed := count - len(alive) - len(missing)) > 0:
            missing.append(f"{unnamed} more node(s)")
        listed = ", ".join(f"{n['hostname']}/{n['ip']}/{n['node_id'][:8]}" for n in alive)
        parts = [f"{len(alive)} alive: {listed or 'none'}"]
        if missing:
            parts.append(f"never joined: {', '.join(missing)}")
        if not at_least and len(alive) > count:
            parts.append(f"{len(alive) - count} more than expected")
        if last["error"]:
            parts.append(f"last probe error: {last['error']}")
        return "; ".join(parts)

    try:
        return wait_for(
            probe,
            timeout=timeout,
            what=f"{'at least ' if at_least else ''}{count} alive Ray node(s)"
            + (f" {where}" if where else ""),
            interval=interval,
            last_seen=describe,
            give_up=give_up,
        )
    except WaitTimeout as exc:
        raise NodesTimeout(str(exc), never_joined(last["alive"])) from None


def urlopen_ok(url: str, timeout: float = 5.0) -> bool:
    """True when GET url answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def file_lock(
    path: Path, deadline: Deadline, progress: Callable[[str], None], what: str
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (one build per machine for every process that needs it).

    Waits for another holder at most until ``deadline``, saying so once; raises
    :class:`WaitTimeout` naming ``what`` the lock guards. The lock is ``filelock``'s (an
    ``flock`` on Unix), released when the block ends or the process dies.
    """
    lock = filelock.FileLock(path)

    def locked() -> bool:
        try:
            lock.acquire(timeout=0)  # one try; the waiting is wait_for's, bounded and named
        except filelock.Timeout:
            return False
        return True

    path.parent.mkdir(parents=True, exist_ok=True)
    if not locked():
        progress(f"waiting for another process's {what} ...")
        wait_for(
            locked,
            timeout=deadline.remaining(),
            what=f"another process's {what} to release {path}",
        )
    try:
        yield
    finally:
        lock.release()
