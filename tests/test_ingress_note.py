"""The ingress note: Ray Client through a TLS-terminating endpoint fails naming the limitation.

A TLS server on loopback stands in for an NGINX ingress (it terminates TLS, as the ingress does
for gRPC); Ray Client's plaintext gRPC cannot pass it, and the failure must say so.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_fakes import run

from fixtures.clients import ingress_note, speaks_tls
from provisioners.util.relay import free_port
from provisioners.util.runner import run as run_command


@pytest.fixture(scope="module")
def tls_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A loopback port that answers every connection with a TLS handshake, then closes it."""
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    run_command(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        60,
        what="openssl req",
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])  # what an ingress offers gRPC clients
    listener = socket.create_server(("127.0.0.1", free_port()))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()  # a plaintext client: the handshake fails, as at an ingress

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_tls_endpoint_is_recognised(tls_endpoint: int) -> None:
    assert speaks_tls("127.0.0.1", tls_endpoint)
    note = ingress_note(f"ray://127.0.0.1:{tls_endpoint}")
    assert "insecure (plaintext) gRPC" in note
    assert "NGINX ingress controller carries only secure gRPC" in note


def test_plain_endpoint_gets_no_note() -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain:
        port = plain.getsockname()[1]
        assert not speaks_tls("127.0.0.1", port, timeout=2)
        assert ingress_note(f"ray://127.0.0.1:{port}") == ""


def test_client_through_an_ingress_fails_naming_the_limitation(
    pytester: pytest.Pytester, tls_endpoint: int
) -> None:
    suite = Path(__file__).resolve().parents[1] / "suites" / "test_port_forward.py"
    pytester.makepyfile(test_pf=suite.read_text())
    result = run(
        pytester,
        "--ray-modes=local",
        f"--ray-client-url=ray://127.0.0.1:{tls_endpoint}",
        "--ray-job-timeout=60",
        "-k",
        "client_session",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*answers with TLS, as an NGINX ingress does*"])
