"""The report as a person sees it: runs of fake modes, rendered by headless chromium.

A passing run, a failing run and the matrix merged from both are each opened in Debian's
``chromium``; the text on the first screen is read from the rendered page (its layout, not the
HTML source) and must hold every mode's verdict. The fake modes' dashboards are loopback pages,
so ``--ray-screenshot`` takes real pictures and the report must show them loaded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness_fakes import LEAK_SUITE, run, write_fakes

from fixtures.picture import HEADLESS, chromium
from reports.bundle import main
from reports.certify import PROFILE, PROFILE_MARKER

REPO = Path(__file__).resolve().parents[1]

#: Fake modes whose dashboard is a page on a loopback port of their own.
PICTURE_MOD = '''
"""Fakes with a dashboard page on loopback: --ray-screenshot takes a real picture of it."""

import contextlib
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fakemod import FakeProvisioner
from provisioners.contract.base import Endpoint

PAGE = b"<!DOCTYPE html><title>Ray</title><h1>Cluster</h1><p>2 nodes: rc-head, rc-worker-1</p>"
PROVISION_S = 1.5


class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


class PictureProvisioner(FakeProvisioner):
    """Two nodes; its dashboard answers on a loopback port of its own."""

    def provision(self, spec):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return replace(super().provision(spec), expected_nodes=2)

    @contextlib.contextmanager
    def port_forward(self, remote_port):
        yield Endpoint("127.0.0.1", self.server.server_address[1])

    def teardown(self):
        super().teardown()
        if getattr(self, "server", None) is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class SlowProvisioner(FakeProvisioner):
    """Provisioning takes PROVISION_S: time the report must not charge to the first check."""

    def provision(self, spec):
        time.sleep(PROVISION_S)
        return super().provision(spec)
'''

#: Who the spread counter found, as suites/scripts/spread.py reports them.
NODES = [
    {"node_id": "b" * 56, "hostname": "rc-worker-1", "ip": "172.18.0.3", "head": False},
    {"node_id": "a" * 56, "hostname": "rc-head", "ip": "172.18.0.2", "head": True},
]
SPREAD = {"a" * 56: 21, "b" * 56: 9}
FAILED_ON = "beta"
NODES_FAILURE = "the dashboard lists 1 alive node, expected 2"


def profile_suite() -> str:
    """The profile's checks (but the real leak suite's two) as passing fakes with docstrings.

    The spread checks record their tallies and nodes as the real ones do; the dashboard's node
    check fails on the mode named FAILED_ON.
    """
    leak = {"test_inventory_sees_the_running_cluster", "test_teardown_leaves_nothing_behind"}
    out = [
        '"""Profile checks: the fake cluster does what Ray needs."""',
        "import pytest",
        f"pytestmark = pytest.mark.{PROFILE_MARKER}",
        f"NODES = {NODES!r}",
        f"SPREAD = {SPREAD!r}",
    ]
    for name in PROFILE:
        if name in leak:
            continue
        body = "    pass"
        if name.startswith("test_spread_from_"):
            where = name.removeprefix("test_spread_from_").split("_")[0]
            body = (
                f"    request.node.user_properties.append(('spread_{where}_spread_tally', SPREAD))\n"
                f"    request.node.user_properties.append(('spread_{where}_nodes', NODES))"
            )
        elif name == "test_dashboard_nodes_match_expected":
            body = f"    assert ray_cluster.mode != {FAILED_ON!r}, {NODES_FAILURE!r}"
        title = name.removeprefix("test_").replace("_", " ").capitalize()
        out.append(f'def {name}(ray_cluster, request):\n    """{title} (fake)."""\n{body}')
    return "\n\n\n".join(out) + "\n"


OPTIONAL_SUITE = '''
"""Autoscaling: queued work brings new workers."""
import pytest


def test_autoscaling_adds_workers_for_queued_work(ray_cluster):
    """Queued work brings new workers."""
    pytest.skip(f"{ray_cluster.mode}: the cluster does not autoscale")


def test_autoscaling_removes_idle_workers(ray_cluster):
    """Idle workers go away."""
    pytest.skip(f"{ray_cluster.mode}: the cluster does not autoscale")
'''


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(
        fakepicture=PICTURE_MOD,
        test_profile=profile_suite(),
        test_optional=OPTIONAL_SUITE,
        test_leak=LEAK_SUITE.read_text(),
    )


def provisioners(*specs: str) -> list[str]:
    """``"alpha=PictureProvisioner"`` -> ``--ray-provisioner alpha=fakepicture:...``."""
    out = []
    for spec in specs:
        name, _, cls = spec.partition("=")
        module = "fakepicture" if cls in ("PictureProvisioner", "SlowProvisioner") else "fakemod"
        out += ["--ray-provisioner", f"{name}={module}:{cls}"]
    return out


def passing_run(pytester: pytest.Pytester) -> Path:
    report_dir = pytester.path / "passing"
    result = run(
        pytester,
        *provisioners("alpha=PictureProvisioner"),
        "--ray-screenshot",
        "--ray-run-id=passing",
        f"--ray-report-dir={report_dir}",
    )
    result.assert_outcomes(passed=len(PROFILE), skipped=2)
    result.stdout.fnmatch_lines(
        [f"ray-conformance alpha: CONFORMANT — {len(PROFILE)}/{len(PROFILE)} certification checks"]
    )
    return report_dir


def failing_run(pytester: pytest.Pytester) -> Path:
    report_dir = pytester.path / "failing"
    result = run(
        pytester,
        *provisioners(
            f"{FAILED_ON}=PictureProvisioner",
            "broken=FailingProvisioner",
            "unready=UnreadyProvisioner",
        ),
        "--ray-screenshot",
        "--ray-run-id=failing",
        f"--ray-report-dir={report_dir}",
    )
    # beta: one profile check fails, two optional ones do not apply; broken: every check
    # errors at setup (the provision); unready: every check skipped.
    every = len(PROFILE) + 2
    result.assert_outcomes(passed=len(PROFILE) - 1, failed=1, skipped=2 + every, errors=every)
    return report_dir


@dataclass(frozen=True)
class Rendered:
    """What chromium showed: the text on the first screen, and every picture and its size."""

    first_screen: str
    images: list[dict[str, Any]]
    height: int


#: Run in the page once it has loaded: the text whose box lies in the first screen, and the
#: pictures as loaded (naturalWidth is 0 for a picture that did not load).
PROBE = """<script>
window.addEventListener("load", () => {
  const height = window.innerHeight, texts = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const node = walk.currentNode, range = document.createRange();
    range.selectNodeContents(node);
    const box = range.getBoundingClientRect();
    if (box.height > 0 && box.top < height && box.bottom > 0 && node.textContent.trim())
      texts.push(node.textContent.trim());
  }
  const images = [...document.images].map(i => ({
    src: i.getAttribute("src"), width: i.naturalWidth, top: i.getBoundingClientRect().top}));
  document.documentElement.setAttribute(
    "data-probe", JSON.stringify({height, texts, images}));
});
</script>"""


def rendered(report_dir: Path) -> Rendered:
    """Open ``report.html`` in headless chromium as a person's 1280x800 window would show it."""
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = report_dir / "report.html"
    probe = report_dir / "report-probe.html"  # beside it, so its relative picture links hold
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    try:
        proc = subprocess.run(
            [
                browser,
                *HEADLESS,
                "--window-size=1280,800",
                "--virtual-time-budget=5000",
                "--dump-dom",
                probe.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        probe.unlink()
    found = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert found is not None, f"chromium rendered no probe result; stderr:\n{proc.stderr[-2000:]}"
    data = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    text = re.sub(r"\s+", " ", " ".join(data["texts"]))
    return Rendered(text, data["images"], int(data["height"]))


def test_a_passing_run_opens_on_its_verdict_and_dashboard_picture(
    pytester: pytest.Pytester,
) -> None:
    report_dir = passing_run(pytester)
    seen = rendered(report_dir)
    assert f"alpha: CONFORMANT — {len(PROFILE)}/{len(PROFILE)} certification checks" in (
        seen.first_screen
    )
    assert "provisioned in" in seen.first_screen
    assert "nothing left" in seen.first_screen
    # The dashboard picture is on the page, loaded (chromium decoded it), not a broken link.
    shots = [i for i in seen.images if i["src"] == "screenshots/alpha.png"]
    assert shots, seen.images
    assert shots[0]["width"] > 0
    # The two optional checks that do not apply are one collapsed line, not two grey rows.
    page = (report_dir / "report.html").read_text()
    assert "alpha: 2 optional checks do not apply" in page
    assert 'data-check="test_autoscaling_adds_workers_for_queued_work"' not in page


def test_a_failing_run_opens_on_what_failed_and_why(pytester: pytest.Pytester) -> None:
    report_dir = failing_run(pytester)
    seen = rendered(report_dir)
    assert f"{FAILED_ON}: NOT CONFORMANT — 1 failed: Dashboard nodes match expected (fake)." in (
        seen.first_screen
    )
    assert (
        "broken: NOT CONFORMANT — provisioning failed: ProvisionError: head started, "
        "worker fake-w1 never joined"
    ) in seen.first_screen
    assert "unready: NOT RUN — the `frob` binary is not on PATH" in seen.first_screen
    page = (report_dir / "report.html").read_text()
    # The failed provision is red with its reason; its teardown is a row of its own.
    provision = re.findall(r'<td class="(l-[a-z]+)" data-lifecycle="provision"', page)
    assert provision == ["l-ok", "l-failed"]  # beta, broken; unready has no column
    assert "torn-down" not in page
    assert NODES_FAILURE in page
    records = json.loads((report_dir / "results.json").read_text())["modes"]
    broken = next(m for m in records if m["mode"] == "broken")
    assert broken["status"] == "provision-failed"
    assert broken["teardown_seconds"] is not None  # torn down all the same, and said so


def test_a_merged_matrix_opens_on_every_modes_verdict(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    passing, failing = passing_run(pytester), failing_run(pytester)
    merged = pytester.path / "merged"
    assert main(["merge", str(merged), str(passing), str(failing)]) == 0
    seen = rendered(merged)
    for line in (
        f"alpha: CONFORMANT — {len(PROFILE)}/{len(PROFILE)} certification checks",
        f"{FAILED_ON}: NOT CONFORMANT — 1 failed",
        "broken: NOT CONFORMANT — provisioning failed",
        "unready: NOT RUN",
    ):
        assert line in seen.first_screen, seen.first_screen
    # Both pictures came along into the merged bundle and load there.
    loaded = sorted(i["src"] for i in seen.images if i["width"] > 0)
    assert loaded == ["screenshots/alpha.png", f"screenshots/{FAILED_ON}.png"]


def test_spread_bars_name_each_node_by_hostname_and_ip_with_the_head_first(
    pytester: pytest.Pytester,
) -> None:
    page = (passing_run(pytester) / "report.html").read_text()
    cell = re.search(
        r'data-check="test_spread_from_outside_every_node_runs_work".*?</td>', page, re.S
    )
    assert cell is not None
    labels = re.findall(
        r'<span title="(\w+)">([^<]+)</span>( <span class="head">head</span>)?', cell.group(0)
    )
    assert labels == [
        ("a" * 56, "rc-head (172.18.0.2)", ' <span class="head">head</span>'),
        ("b" * 56, "rc-worker-1 (172.18.0.3)", ""),
    ]


def test_provision_time_is_its_own_row_not_the_first_checks(pytester: pytest.Pytester) -> None:
    report_dir = pytester.path / "slow"
    result = run(pytester, *provisioners("slow=SlowProvisioner"), f"--ray-report-dir={report_dir}")
    result.assert_outcomes(passed=len(PROFILE), skipped=2)
    doc = json.loads((report_dir / "results.json").read_text())
    record = doc["modes"][0]
    assert record["provision_seconds"] >= 1.5
    first = doc["results"][0]  # run order: the check whose setup provisioned the cluster
    assert first["duration_s"] < 1.0, first
    # Titles come from the docstrings: the check's, and its suite module's.
    spread = next(r for r in doc["results"] if r["check"] == PROFILE[0])
    assert spread["title"] == "Spread from outside every node runs work (fake)."
    assert spread["suite"] == "Profile checks: the fake cluster does what Ray needs."


def test_a_k_run_reports_only_the_modes_it_ran(pytester: pytest.Pytester) -> None:
    report_dir = pytester.path / "k"
    result = run(
        pytester,
        *provisioners("alpha=FakeProvisioner", "beta=FakeProvisioner"),
        "-k",
        "alpha",
        f"--ray-report-dir={report_dir}",
    )
    result.assert_outcomes(passed=len(PROFILE), skipped=2)
    doc = json.loads((report_dir / "results.json").read_text())
    assert [m["mode"] for m in doc["modes"]] == ["alpha"]
    page = (report_dir / "report.html").read_text()
    assert 'data-mode="beta"' not in page
    assert "pending" not in page


def test_make_conformance_installs_the_picture_or_says_in_one_line_what_to_install(
    tmp_path: Path,
) -> None:
    plan = subprocess.run(
        ["make", "-n", "conformance"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert plan[-2:] == [
        "bash .ci/system-deps.sh picture",
        ".venv/bin/python -m pytest --ray-modes local --ray-screenshot ",
    ]
    # A machine without chromium and without apt (or not root): one line, and the run goes on.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").symlink_to(shutil.which("id") or "/usr/bin/id")
    proc = subprocess.run(
        ["/bin/bash", str(REPO / ".ci" / "system-deps.sh"), "picture"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
    )
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr == (
        "system-deps: missing chromium; install with `sudo apt-get install chromium` "
        "(until then the report has no dashboard picture)\n"
    )
