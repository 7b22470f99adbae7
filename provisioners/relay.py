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

from provisioners.base import Endpoint

_CHUNK = 65536


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick, so it does not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _pump(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.5):
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                dst: socket.socket = key.data
                data = src.recv(_CHUNK)
                if not data:
                    return
                dst.sendall(data)
    except OSError:
        return
    finally:
        sel.close()
        a.close()
        b.close()


@contextlib.contextmanager
def tcp_relay(host: str, port: int, *, connect_timeout: float = 10.0) -> Iterator[Endpoint]:
    """Listen on a fresh loopback port and relay each connection to ``host:port``.

    On exit the listener and every relayed connection are closed, so the port is free again.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As Go's listeners (kubectl port-forward) do: connections we closed but a peer has not
    # (FIN_WAIT2, TIME_WAIT) must not stop a new forward from binding the port.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.5)
    stop = threading.Event()
    pumps: list[threading.Thread] = []
    # Every socket the relay opened, so exit closes them itself instead of trusting threads
    # that may be stuck connecting upstream: an accepted socket left open keeps the port bound.
    opened: list[socket.socket] = []

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            opened.append(conn)
            try:
                upstream = socket.create_connection((host, port), timeout=connect_timeout)
            except OSError:
                conn.close()
                continue
            opened.append(upstream)
            conn.settimeout(None)
            upstream.settimeout(None)
            t = threading.Thread(target=_pump, args=(conn, upstream, stop), daemon=True)
            t.start()
            pumps.append(t)

    acceptor = threading.Thread(target=accept_loop, name=f"relay-{host}:{port}", daemon=True)
    acceptor.start()
    try:
        yield Endpoint("127.0.0.1", int(listener.getsockname()[1]))
    finally:
        stop.set()
        listener.close()
        acceptor.join(timeout=5)
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for t in pumps:
            t.join(timeout=5)
