"""Fake provisioners and run helpers shared by the harness tests (tests/test_harness_*.py).

The fakes are written into each pytester dir as ``fakemod.py``. Every lifecycle call appends one
JSON line to ``calls.jsonl`` next to it, so a test can count provisions and teardowns even when
they happened in another process (``runpytest_subprocess``, xdist workers).
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
LEAK_SUITE = REPO / "suites" / "test_teardown_leak.py"
CALLS_FILE = "calls.jsonl"

FAKEMOD = '''
"""Fake provisioners: no cluster, every call recorded in calls.jsonl."""

import contextlib
import json
import os
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from provisioners.contract.base import (
    ClusterHandle, Endpoint, InventoryError, InventoryItem, ProvisionError, direct_endpoint,
)
from provisioners.contract.options import Option

LOG = Path(__file__).with_name("calls.jsonl")


def record(event, mode, **extra):
    line = {
        "event": event,
        "mode": mode,
        "pid": os.getpid(),
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        **extra,
    }
    with LOG.open("a") as fh:
        fh.write(json.dumps(line) + "\\n")


class FakeProvisioner:
    """Provisions instantly; its inventory is the head while up, empty after teardown."""

    def __init__(self):
        self.spec = None
        self.up = False

    def missing_prerequisites(self, spec):
        return []

    def provision(self, spec):
        self.spec = spec
        record("provision", spec.mode, run_id=spec.run_id)
        self.up = True
        return ClusterHandle(
            mode=spec.mode,
            expected_nodes=1,
            ray_version="2.60.0",
            python_version="3.11",
            head_address="fake-head:6379",
            access={
                "dashboard": f"http://{spec.mode}.invalid:8265",
                "remove": f"fakectl delete --run {spec.run_id}",
            },
        )

    def port_forward(self, remote_port):
        return direct_endpoint("127.0.0.1", remote_port)

    def run_in_cluster(self, script, timeout):
        return ""

    def inventory(self):
        if not self.up:
            return []
        return [InventoryItem("process", f"{self.spec.mode}-head", self.spec.run_id)]

    def collect_diagnostics(self, dest):
        record("diagnostics", self.spec.mode)

    def teardown(self):
        record("teardown", self.spec.mode if self.spec else "?")
        self.up = False


class LeakyProvisioner(FakeProvisioner):
    """Its teardown forgets a container."""

    def inventory(self):
        return [
            InventoryItem("container", "fake-head-1", self.spec.run_id, "still running"),
        ]


class BlindProvisioner(FakeProvisioner):
    """Its cloud API answers 503 to every listing once the cluster is down."""

    def inventory(self):
        if self.up:
            return super().inventory()
        raise InventoryError("fake instances", "ServiceUnavailable: 503 from the fake API")


class ErrorAlwaysProvisioner(FakeProvisioner):
    """Its inventory hits a bug (not an InventoryError) whether the cluster is up or not."""

    def inventory(self):
        raise KeyError("Reservations")


class FailingProvisioner(FakeProvisioner):
    """Creates the head, then gives up with a ProvisionError."""

    def provision(self, spec):
        self.spec = spec
        record("provision", spec.mode, run_id=spec.run_id)
        self.up = True  # half-way: something exists that teardown must remove
        raise ProvisionError("head started, worker fake-w1 never joined")


class CrashingProvisioner(FakeProvisioner):
    """Creates the head, then hits a bug (not a ProvisionError)."""

    def provision(self, spec):
        self.spec = spec
        record("provision", spec.mode, run_id=spec.run_id)
        self.up = True
        raise RuntimeError("unexpected reply from the fake API")


class UnreadyProvisioner(FakeProvisioner):
    """This machine lacks what the mode needs."""

    def missing_prerequisites(self, spec):
        return ["the `frob` binary is not on PATH"]  # the harness names the mode


class NoRemoveProvisioner(FakeProvisioner):
    """Its handle says how to reach the cluster but not how to remove it."""

    def provision(self, spec):
        handle = super().provision(spec)
        return replace(handle, access={"dashboard": handle.access["dashboard"]})


class HangingProvisioner(FakeProvisioner):
    """Creates the head, then hangs (a wait with no bound of its own)."""

    def provision(self, spec):
        self.spec = spec
        record("provision", spec.mode, run_id=spec.run_id)
        self.up = True
        import time
        time.sleep(600)


class HangingTeardownProvisioner(FakeProvisioner):
    """Its teardown hangs before it removes anything."""

    def teardown(self):
        record("teardown", self.spec.mode)
        import time
        time.sleep(600)


def _signal_self(signum):
    import signal
    os.kill(os.getpid(), getattr(signal, signum))


class SignalInProvisionProvisioner(FakeProvisioner):
    """Gets SIGINT (or $FAKE_SIGNAL) half-way through provisioning."""

    def provision(self, spec):
        self.spec = spec
        record("provision", spec.mode, run_id=spec.run_id)
        self.up = True
        _signal_self(os.environ.get("FAKE_SIGNAL", "SIGINT"))
        import time
        time.sleep(30)  # the signal ends this


class SignalInTeardownProvisioner(FakeProvisioner):
    """Gets two signals in the middle of its teardown, and finishes it all the same."""

    def teardown(self):
        record("teardown-start", self.spec.mode)
        for _ in range(2):
            _signal_self(os.environ.get("FAKE_SIGNAL", "SIGINT"))
        import time
        time.sleep(0.2)
        record("teardown", self.spec.mode)
        self.up = False


# A vendor's mode declares its settings next to its code, as OPTIONS on the class.
REPLICAS = Option.integer("fake-replicas", "fake: replicas per node", 2, minimum=1)
FAST = Option.switch("fake-fast", "fake: skip the slow path")


class OptionsProvisioner(FakeProvisioner):
    """Declares two options and records the typed values it is handed."""

    OPTIONS = (REPLICAS, FAST)

    def provision(self, spec):
        record(
            "options",
            spec.mode,
            options=dict(spec.options),
            replicas=spec.get(REPLICAS),
            workers=spec.workers,
            timeouts=[spec.timeouts.provision, spec.timeouts.node_join],
        )
        return super().provision(spec)


#: What the short cluster's state API lists: two alive nodes and the worker that died.
NODES = [
    {"node_id": "aaaa1111" * 7, "node_ip": "10.0.0.1", "node_name": "head", "state": "ALIVE"},
    {"node_id": "bbbb2222" * 7, "node_ip": "10.0.0.2", "node_name": "worker1", "state": "ALIVE"},
    {
        "node_id": "dead3333" * 7,
        "node_ip": "10.0.0.3",
        "node_name": "worker2",
        "state": "DEAD",
        "end_time_ms": 1764150000000,
        "state_message": "Unexpected termination: health check failed",
    },
]


def json_server(routes):
    """A loopback HTTP server answering GET <path> with routes[path] as JSON (a fake dashboard);
    a callable route is called at each request (what the cluster shows at that moment)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            route = routes[self.path.split("?")[0]]
            body = json.dumps(route() if callable(route) else route).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class ShortProvisioner(FakeProvisioner):
    """Expects three nodes; its dashboard's state API shows one of them DEAD."""

    def provision(self, spec):
        self.server = json_server({"/api/v0/nodes": {"data": {"result": {"result": NODES}}}})
        return replace(super().provision(spec), expected_nodes=3)

    @contextlib.contextmanager
    def port_forward(self, remote_port):
        record("forward", self.spec.mode, port=remote_port)
        yield Endpoint("127.0.0.1", self.server.server_address[1])

    def teardown(self):
        super().teardown()
        if getattr(self, "server", None):
            self.server.shutdown()
            self.server.server_close()


class OtherVersionsProvisioner(ShortProvisioner):
    """Two alive nodes; the worker runs another Ray and Python than the head and the client.

    Its dashboard says the head's Ray; its in-cluster scripts answer as the per-node version
    probe would on such a cluster.
    """

    def provision(self, spec):
        import importlib.metadata
        import sys

        self.ray = importlib.metadata.version("ray")
        self.python = "%d.%d" % sys.version_info[:2]
        self.server = json_server({
            "/api/v0/nodes": {"data": {"result": {"result": NODES[:2]}}},
            "/api/version": {"ray_version": self.ray},
        })
        handle = FakeProvisioner.provision(self, spec)
        return replace(handle, expected_nodes=2, ray_version=self.ray, python_version=self.python)

    def run_in_cluster(self, script, timeout):
        head, worker = NODES[:2]
        found = {
            head["node_id"]: {"ray": self.ray, "python": self.python, "hostname": "head"},
            worker["node_id"]: {"ray": "2.9.3", "python": "3.10", "hostname": "worker1"},
        }
        for node in (head, worker):
            found[node["node_id"]]["ip"] = node["node_ip"]
        return "RESULT " + json.dumps(found) + "\\n"


class RelayProvisioner(FakeProvisioner):
    """Its forwards are the built-in relay to a fake dashboard (/api/version) on loopback."""

    LISTEN = "127.0.0.1"

    def provision(self, spec):
        self.server = json_server({"/api/version": {"ray_version": "2.60.0"}})
        return super().provision(spec)

    def port_forward(self, remote_port):
        from provisioners.util.relay import tcp_relay

        return tcp_relay("127.0.0.1", self.server.server_address[1], listen=self.LISTEN)

    def teardown(self):
        super().teardown()
        self.server.shutdown()
        self.server.server_close()


class ExposedRelayProvisioner(RelayProvisioner):
    """The same relay listening on every address: it says loopback, it answers all comers."""

    LISTEN = "0.0.0.0"
'''

# Inner suite tests: mode-agnostic, like suites/.
CHECKS = """
def test_one(ray_cluster):
    assert ray_cluster.expected_nodes == 1


def test_two(ray_cluster, ray_spec, ray_provisioner):
    assert ray_spec.mode == ray_cluster.mode
"""


def write_fakes(pytester: pytest.Pytester) -> None:
    """Put ``fakemod.py`` into the pytester dir, importable by in-process runs too."""
    pytester.makepyfile(fakemod=FAKEMOD)
    # The plugin imports fakemod in pytest_configure, before collection puts the dir on sys.path.
    pytester.syspathinsert()


def make_vendor_dist(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, entry_points: str
) -> None:
    """An installed-looking ``vendorpkg`` distribution registering ``entry_points``.

    Found by ``run_subprocess`` runs: the pytester dir goes on their PYTHONPATH.
    """
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    dist = pytester.mkdir("vendorpkg-0.1.dist-info")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vendorpkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[ray_conformance.provisioners]\n{entry_points}\n")


def modes(*specs: str) -> list[str]:
    """``"alpha=FakeProvisioner"`` -> ``["--ray-provisioner", "alpha=fakemod:FakeProvisioner"]``."""
    out: list[str] = []
    for spec in specs:
        name, _, cls = spec.partition("=")
        out += ["--ray-provisioner", f"{name}=fakemod:{cls}"]
    return out


def run(pytester: pytest.Pytester, *args: str, **kwargs: Any) -> pytest.RunResult:
    """An in-process inner run (the plugin loads by its entry point, as for a user).

    The inner run collects its own copy of ``suites/``: the checkout's, imported by a test
    module of this process, is set aside meanwhile (else "import file mismatch").
    """
    ours = {n: m for n, m in sys.modules.items() if n == "suites" or n.startswith("suites.")}
    for name in ours:
        del sys.modules[name]
    try:
        return pytester.runpytest(*args, **kwargs)
    finally:
        for name in [n for n in sys.modules if n == "suites" or n.startswith("suites.")]:
            del sys.modules[name]
        sys.modules.update(ours)


def run_subprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The same in a fresh interpreter (entry points, xdist, process state)."""
    return pytester.runpytest_subprocess(*args, timeout=120)


def calls(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    """Every recorded lifecycle call, in the order made."""
    path = pytester.path / CALLS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def events(pytester: pytest.Pytester, *kinds: str) -> list[tuple[str, str]]:
    """(event, mode) pairs, keeping only ``kinds`` when given."""
    return [(c["event"], c["mode"]) for c in calls(pytester) if not kinds or c["event"] in kinds]


def literal(text: str) -> str:
    """An fnmatch pattern matching ``text`` exactly (``[``, ``*`` and ``?`` escaped)."""
    return glob.escape(text)


def uv(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-m", "uv", *map(str, args)], check=True, cwd=cwd, timeout=300)


def venv_over_project(venv: Path) -> Path:
    """A new venv with this project's locked env laid under it; its python.

    The project's environment is laid under the new one with a ``.pth`` (what
    ``--system-site-packages`` does for a base interpreter): what is installed into the new one
    comes first, everything else is the project's, without re-installing the lock (the network
    and minutes).
    """
    # The interpreter this project's venv was made from (a venv's own python is a link to it).
    base = getattr(sys, "_base_executable", sys.executable)
    uv("venv", "--offline", "--python", base, venv)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    project_site = sysconfig.get_paths()["purelib"]
    # addsitedir, not a bare path: the project env's own .pth files (its editable install) count.
    Path(site, "_ray_conformance_env.pth").write_text(
        f"import site; site.addsitedir({project_site!r})\n"
    )
    return python
