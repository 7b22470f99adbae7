"""The loopback relay every mode without a native forwarder uses as its port-forward."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_fakes import modes, run, write_fakes

from provisioners.util.relay import free_port, tcp_relay
from provisioners.util.waits import port_is_free


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by the fixture's teardown
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    server.close()


def test_relay_carries_bytes_both_ways(echo_port: int) -> None:
    with (
        tcp_relay("127.0.0.1", echo_port) as ep,
        socket.create_connection((ep.host, ep.port), timeout=5) as c,
    ):
        c.sendall(b"ping")
        assert c.recv(4) == b"ping"


def test_relay_port_is_free_after_exit_even_with_a_client_still_connected(echo_port: int) -> None:
    client = None
    with tcp_relay("127.0.0.1", echo_port) as ep:
        client = socket.create_connection((ep.host, ep.port), timeout=5)
        client.sendall(b"x")
        assert client.recv(1) == b"x"
    try:
        assert port_is_free(ep.port), f"port {ep.port} still held after the relay closed"
    finally:
        client.close()


def test_relay_to_a_closed_port_refuses_the_session() -> None:
    dead = free_port()
    with (
        tcp_relay("127.0.0.1", dead, connect_timeout=1) as ep,
        socket.create_connection((ep.host, ep.port), timeout=5) as c,
    ):
        c.settimeout(5)
        assert c.recv(1) == b"", "the relay should close a client whose upstream refuses"


def test_relay_closes_cleanly_when_a_connection_outlives_it(
    echo_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session whose upstream answers only after the relay closed ends without a thread error.

    The accepted socket is closed by the relay's exit while its upstream is still connecting
    (an unreachable node); the old relay then raised in ``selectors.register`` on it.
    """
    errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    connecting, release = threading.Event(), threading.Event()
    real_connect = socket.create_connection

    def slow_connect(address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        connecting.set()
        release.wait(10)
        return real_connect(address, timeout=timeout)

    monkeypatch.setattr(socket, "create_connection", slow_connect)
    t0 = time.monotonic()
    with tcp_relay("127.0.0.1", echo_port) as ep, real_connect((ep.host, ep.port), timeout=5):
        assert connecting.wait(5), "the relay never tried its upstream"
    assert time.monotonic() - t0 < 3, "an upstream still connecting held up the relay's exit"
    release.set()
    for thread in threading.enumerate():
        if thread.name.startswith("relay-"):
            thread.join(timeout=5)
    assert not errors, [f"{e.thread}: {e.exc_type.__name__}: {e.exc_value}" for e in errors]


PORT_FORWARD_SUITE = Path(__file__).resolve().parents[1] / "suites" / "test_port_forward.py"


def test_port_forward_check_fails_a_relay_that_listens_beyond_loopback(
    pytester: pytest.Pytester,
) -> None:
    """The relay hands out 127.0.0.1 either way; the check reads what the kernel says listens."""
    write_fakes(pytester)
    pytester.makepyfile(test_forward=PORT_FORWARD_SUITE.read_text())
    result = run(
        pytester,
        *modes("good=RelayProvisioner", "exposed=ExposedRelayProvisioner"),
        "-k",
        "reachable_on_loopback",
    )
    result.assert_outcomes(passed=2, failed=2, deselected=2)
    for port in ("client", "dashboard"):
        result.stdout.fnmatch_lines(
            [
                f"*test_port_forward_reachable_on_loopback_then_freed?exposed-{port}?*",
                "E * AssertionError: forward of * at 127.0.0.1:* also listens on 0.0.0.0: "
                "reachable beyond this machine's loopback",
            ]
        )
    result.stdout.no_fnmatch_line("*FAILED*good*")


def test_free_port_never_hands_out_a_port_twice() -> None:
    # The kernel's pick repeats within a few hundred binds (measured: 500 plain picks held a
    # repeat every time); one `ray start` takes six of them and refuses a repeat.
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports), sorted(p for p in ports if ports.count(p) > 1)
