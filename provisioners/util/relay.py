"""A loopback TCP relay: the port-forward for modes whose ports are already reachable.

Modes without a native forwarder (``kubectl port-forward``, ``ssh -L``) still hand out a port
that exists only while the context is open, so "the port is free again afterwards" means the
same for every mode.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator

from provisioners.contract.base import Endpoint

_CHUNK = 65536
#: Where a relay listens: this machine's loopback only.
LOOPBACK = "127.0.0.1"


#: Ports ``free_port`` handed out in this process. Nothing holds a picked port until its user
#: binds it, so the kernel may pick it again: two of one `ray start`'s ports once came out equal
#: and Ray refused to start ("trying to use a port number ... used by other components").
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()
_PICKS = 100


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now and that this process has not handed out before."""
    with _handed_out_lock:
        for _ in range(_PICKS):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise OSError(f"no free port on {host} this process had not handed out in {_PICKS} picks")


class _Sessions:
    """The relay's open sockets; once closed, a late session closes its own sockets instead.

    One lock orders "register a socket" against "close them all": a session whose upstream
    answers after the relay exited (an unreachable node takes ``connect_timeout``) never
    touches a socket the exit already closed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.closed = threading.Event()
        self.pumping: list[threading.Thread] = []

    def adopt(self, *socks: socket.socket) -> bool:
        """Track ``socks`` until the relay closes; False (and closed) when it already has."""
        with self._lock:
            if not self.closed.is_set():
                self._open.extend(socks)
                return True
        for sock in socks:
            sock.close()
        return False

    def close_all(self) -> None:
        with self._lock:
            self.closed.set()
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in select
                sock.close()


def _session(conn: socket.socket, host: str, port: int, timeout: float, s: _Sessions) -> None:
    try:
        upstream = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        conn.close()  # the client sees its session refused
        return
    if not s.adopt(upstream):
        return
    s.pumping.append(threading.current_thread())
    try:
        conn.settimeout(None)
        upstream.settimeout(None)
        _pump(conn, upstream, s.closed)
    except (OSError, ValueError):
        # The relay closed these sockets under us (ValueError: a closed socket has fd -1).
        return
    finally:
        conn.close()
        upstream.close()


def _pump(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.5):
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                dst: socket.socket = key.data
                data = src.recv(_CHUNK)
                if not data:
                    return  # one side closed: end the session both ways
                dst.sendall(data)


@contextlib.contextmanager
def tcp_relay(
    host: str, port: int, *, connect_timeout: float = 10.0, listen: str = LOOPBACK
) -> Iterator[Endpoint]:
    """Listen on a fresh loopback port and relay each connection to ``host:port``.

    On exit the listener and every relayed connection are closed, so the port is free again;
    a session still connecting upstream does not hold the exit up. ``listen`` other than
    loopback exposes the forward beyond this machine (the port-forward check's broken case);
    the endpoint handed out is the loopback one either way.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As Go's listeners (kubectl port-forward) do: connections we closed but a peer has not
    # (FIN_WAIT2, TIME_WAIT) must not stop a new forward from binding the port.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((listen, 0))
    listener.listen(64)
    listener.settimeout(0.5)
    sessions = _Sessions()
    name = f"relay-{host}:{port}"

    def accept_loop() -> None:
        while not sessions.closed.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # Each session connects upstream in its own thread, so a slow upstream never
            # blocks the next accept or the relay's exit.
            if sessions.adopt(conn):
                args = (conn, host, port, connect_timeout, sessions)
                threading.Thread(target=_session, args=args, name=name, daemon=True).start()

    acceptor = threading.Thread(target=accept_loop, name=name, daemon=True)
    acceptor.start()
    try:
        yield Endpoint(LOOPBACK, int(listener.getsockname()[1]))
    finally:
        sessions.close_all()
        listener.close()
        acceptor.join(timeout=5)
        # Sessions that were pumping end at once on their closed sockets; one still
        # connecting upstream ends by itself when the connect returns.
        for thread in list(sessions.pumping):
            thread.join(timeout=5)
