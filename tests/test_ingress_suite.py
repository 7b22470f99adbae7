"""The ingress suite (suites/test_ingress.py) against fake ingresses on loopback.

Each fake's "ingress" is a small HTTP server: one routes by host as an ingress should, one
answers every host alike, one routes nothing; a TLS endpoint stands in for an NGINX ingress in
front of Ray Client. Each check must fail on the ingress it exists to catch, naming why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_fakes import REPO, modes, run, write_fakes
from test_ingress_note import tls_endpoint  # noqa: F401  (a module fixture, used by name)

SUITE = REPO / "suites" / "test_ingress.py"

INGRESS_FAKES = '''
import contextlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fakemod import FakeProvisioner
from provisioners.contract.base import Endpoint, IngressRoute

HOST = "ray.fake.rc.test"
VERSION = {"ray_version": "2.60.0"}


def serve(answer):
    """A loopback HTTP server; answer(host, path) -> (status, JSON body)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, data = answer(self.headers.get("Host", ""), self.path)
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _IngressFake(FakeProvisioner):
    """The dashboard on a 'forward'; the ingress is another server, answering by ``route``."""

    def route(self, host, path):
        raise NotImplementedError

    def provision(self, spec):
        self.dashboard = serve(lambda host, path: (200, VERSION))
        self.ingress = serve(self.route)
        return super().provision(spec)

    @contextlib.contextmanager
    def port_forward(self, remote_port):
        yield Endpoint("127.0.0.1", self.dashboard.server_address[1])

    def ingress_route(self):
        address = os.environ.get("FAKE_INGRESS") or f"127.0.0.1:{self.ingress.server_address[1]}"
        return IngressRoute(address, HOST, "/", "the fake ingress")

    def teardown(self):
        super().teardown()
        for server in (getattr(self, "dashboard", None), getattr(self, "ingress", None)):
            if server is not None:
                server.shutdown()
                server.server_close()


class ByHostIngress(_IngressFake):
    """Routes the dashboard for its host only, as an ingress does."""

    def route(self, host, path):
        return (200, VERSION) if host == HOST and path == "/api/version" else (404, {})


class CatchAllIngress(_IngressFake):
    """Answers every host with the dashboard: no route by host."""

    def route(self, host, path):
        return 200, VERSION


class NoRouteIngress(_IngressFake):
    """Routes nothing (an Ingress the controller never picked up)."""

    def route(self, host, path):
        return 404, {"error": "404 page not found"}


class NoIngress(_IngressFake):
    """Has the ability, but this run asked for no ingress."""

    def ingress_route(self):
        return None
'''


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(ingressfakes=INGRESS_FAKES, test_ingress=SUITE.read_text())


def _modes(cls: str) -> list[str]:
    return [arg.replace("fakemod:", "ingressfakes:") for arg in modes(f"fake={cls}")]


def test_routes_by_host_pass(pytester: pytest.Pytester) -> None:
    result = run(pytester, *_modes("ByHostIngress"), "-k", "not client")
    result.assert_outcomes(passed=2, deselected=1)


def test_dashboard_check_fails_when_nothing_is_routed(pytester: pytest.Pytester) -> None:
    result = run(
        pytester, *_modes("NoRouteIngress"), "-k", "dashboard", "--ray-preflight-timeout=2"
    )
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "*the dashboard's /api/version through the fake ingress (http://127.0.0.1:*/api/version,"
            " Host ray.fake.rc.test)*HTTP 404*",
        ]
    )


def test_host_check_fails_when_every_host_is_routed(pytester: pytest.Pytester) -> None:
    result = run(pytester, *_modes("CatchAllIngress"), "-k", "only_its_host")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "*with Host not-ray.fake.rc.test answered HTTP 200*the ingress routes hosts other than"
            " ray.fake.rc.test to the head*",
        ]
    )


def test_client_check_through_tls_names_the_limitation(
    pytester: pytest.Pytester,
    tls_endpoint: int,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ingress that terminates TLS (NGINX's gRPC): the failure says why Ray Client cannot pass."""
    monkeypatch.setenv("FAKE_INGRESS", f"127.0.0.1:{tls_endpoint}")
    result = run(pytester, *_modes("ByHostIngress"), "-k", "client", "--ray-job-timeout=60")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "*a Ray Client session through the fake ingress (ray://127.0.0.1:*, authority"
            " ray.fake.rc.test) failed: 127.0.0.1:* answers with TLS, as an NGINX ingress does*",
        ]
    )


def test_skipped_where_the_run_has_no_ingress(pytester: pytest.Pytester) -> None:
    result = run(pytester, *_modes("NoIngress"), "-rs")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*fake: this run put no ingress in front of the head*"])


def test_suite_file_is_mode_agnostic() -> None:
    text = Path(SUITE).read_text()
    assert "provisioners.kube" not in text
    assert "traefik" not in text.lower()
