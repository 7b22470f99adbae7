"""Every shared check, fed the broken cluster it exists to catch, FAILS naming the cause.

Each fake below is a two-node cluster behind a fake dashboard (the state API, /api/version, the
jobs API) with one thing wrong: a node that never runs work, a job that fails, a forward that is
never freed, /dev/shm too small, an image of another Ray, a launcher that lost a node, a cluster
that never scales, a killed worker Ray never reports. The suites run unchanged against them
(pytester). Other breaks have their own tests: the leak check (test_harness_leak.py,
test_inventory_errors.py), a dead node (test_harness_dead_node.py, test_harness_nodes.py), other
Ray/Python versions (test_preflight_message.py), a forward beyond loopback (test_relay.py).
"""

from __future__ import annotations

import shutil

import pytest
from harness_fakes import REPO, literal, run, write_fakes

from suites.test_spread import check_spread

BROKEN = '''
"""Two-node fake clusters, each broken in one way."""

import contextlib
import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fakemod import NODES, FakeProvisioner
from provisioners.contract.base import AutoscalingLimits, Endpoint

HEAD, WORKER = NODES[:2]
RAY = "2.60.0"


def dashboard(routes):
    """A loopback server answering GET and POST <path> with routes[(method, path)] as JSON."""

    class Handler(BaseHTTPRequestHandler):
        def answer(self, method):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?")[0]
            found = routes.get((method, path))
            if found is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps(found).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.answer("GET")

        def do_POST(self):
            self.answer("POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def summary(*nodes):
    """The dashboard's own node list (/nodes?view=summary), as a person sees it."""
    return {"data": {"summary": [
        {"hostname": n["node_name"], "ip": n["node_ip"],
         "raylet": {"nodeId": n["node_id"], "state": "ALIVE"}} for n in nodes
    ]}}


class TwoNodes(FakeProvisioner):
    """Head and worker alive; every port's "forward" is the fake dashboard's own port."""

    def routes(self):
        return {
            ("GET", "/api/v0/nodes"): {"data": {"result": {"result": [HEAD, WORKER]}}},
            ("GET", "/api/version"): {"ray_version": RAY, "version": "4"},
            ("GET", "/nodes"): summary(HEAD, WORKER),
        }

    def provision(self, spec):
        self.server = dashboard(self.routes())
        return replace(super().provision(spec), expected_nodes=2, ray_version=RAY)

    @contextlib.contextmanager
    def port_forward(self, remote_port):
        # Broken for the port-forward check: the port stays held after the forward closes.
        yield Endpoint("127.0.0.1", self.server.server_address[1])

    def teardown(self):
        super().teardown()
        if getattr(self, "server", None):
            self.server.shutdown()
            self.server.server_close()


class SpreadIdle(TwoNodes):
    """The worker never runs the work pinned to it: the spread script's tally shows it."""

    def run_in_cluster(self, script, timeout):
        alive = [{"node_id": n["node_id"], "hostname": n["node_name"], "ip": n["node_ip"]}
                 for n in (HEAD, WORKER)]
        result = {"alive": alive, "pinned": {HEAD["node_id"]: 1}, "where": {}, "misplaced": [],
                  "spread": {HEAD["node_id"]: 30}, "iterations": 1, "joined": [],
                  "load": {"tasks": 30, "submitted": 30, "done": 30, "seconds": 1.0,
                           "tasks_per_s": 30.0, "deadline_s": 135.0}}
        return "RESULT " + json.dumps(result) + "\\n"


class JobsFail(TwoNodes):
    """Every submitted job fails: the nodes' python cannot import ray."""

    def routes(self):
        job = {"type": "SUBMISSION", "job_id": None, "submission_id": "raysubmit_rc",
               "status": "FAILED", "entrypoint": "python -c ...", "message": "exited 1"}
        return {
            **super().routes(),
            ("POST", "/api/jobs/"): {"job_id": "raysubmit_rc", "submission_id": "raysubmit_rc"},
            ("GET", "/api/jobs/raysubmit_rc"): job,
            ("GET", "/api/jobs/raysubmit_rc/logs"): {"logs": "ModuleNotFoundError: No module named 'ray'"},
        }


class DashboardMissesNode(TwoNodes):
    """The GCS has both nodes; the dashboard's own node list shows only the head."""

    def routes(self):
        return {**super().routes(), ("GET", "/nodes"): summary(HEAD)}


class SmallShm(TwoNodes):
    """Asked for 2 GiB of /dev/shm per node, got Docker's 64 MiB; Ray put its store in /tmp."""

    def node_names(self):
        return ["head", "worker1"]

    def node_exec(self, node, argv, timeout):
        if argv[0] == "df":
            return "Filesystem 1-blocks Used Available Capacity Mounted on\\nshm 67108864 0 67108864 0% /dev/shm\\n"
        return "/usr/bin/raylet\\n--plasma_directory=/tmp\\n--object_store_memory=268435456\\n--proc--\\n"

    def shm_bytes_per_node(self):
        return 2 * 1024**3

    def shm_advice(self):
        return "run each container with --shm-size=2g"


class OtherImage(TwoNodes):
    """A lone container of the image computes 1 + 1 = 3 and carries another Ray and Python."""

    def image_run(self, argv, timeout):
        return "RESULT 3\\n" if "RESULT" in argv[-1] else "VERSIONS 2.9.3 3.10\\n"


class LostLauncher(TwoNodes):
    """`ray status` counts one node, the monitor log is empty, ssh finds another Ray, and the
    worker lacks the package setup_commands installed."""

    def cluster_config(self):
        return Path("cluster.yaml")

    def launcher_exec(self, command, timeout):
        if command == "ray status":
            return "Node status\\nActive:\\n 1 ray.head.default\\nPending:\\n (no pending nodes)\\n"
        return "tail: cannot open '/tmp/ray/session_latest/logs/monitor*'\\n"

    def head_ssh(self, command, timeout):
        return "RAY 2.9.3\\n"

    def setup_packages(self):
        return ["boto3"]

    def run_in_cluster(self, script, timeout):
        found = {HEAD["node_id"]: ["head", {"boto3": "ok"}],
                 WORKER["node_id"]: ["worker1", {"boto3": "ModuleNotFoundError: No module named 'boto3'"}]}
        return "RESULT " + json.dumps(found) + "\\n"


class NeverScales(TwoNodes):
    """Queued work brings no new worker."""

    def autoscaling_limits(self):
        return AutoscalingLimits(min_workers=0, max_workers=2, cpus_per_worker=1.0, head_cpus=0.0,
                                 idle_timeout_s=5.0, scale_up_timeout_s=1.0, scale_down_timeout_s=1.0)

    def run_in_cluster(self, script, timeout):
        result = {"baseline": [HEAD["node_id"]], "tasks": 4, "first_new_s": None, "done_s": None,
                  "peak": 1, "tally": {}, "scale_down_s": None, "timeline": [[0.0, 1]],
                  "alive_at_end": 1}
        return "RESULT " + json.dumps(result) + "\\n"


class Undying(TwoNodes):
    """Its worker is "killed" but Ray keeps listing it ALIVE, and nothing replaces it."""

    def kill_worker(self):
        return WORKER["node_ip"]

    def replaces_lost_nodes(self):
        return True
'''


@pytest.fixture(autouse=True)
def _broken(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(brokenmod=BROKEN)
    suites = pytester.mkdir("suites")
    for path in (REPO / "suites").glob("test_*.py"):
        shutil.copy(path, suites / path.name)
    shutil.copytree(REPO / "suites" / "scripts", suites / "scripts")


def _run(pytester: pytest.Pytester, cls: str, select: str, *args: str) -> pytest.RunResult:
    # importlib: the suites' module names (test_launcher, ...) are taken in this process.
    return run(
        pytester,
        "suites",
        "--import-mode=importlib",
        "--ray-provisioner",
        f"broken=brokenmod:{cls}",
        "-k",
        select,
        "--ray-node-timeout",
        "1",
        "--ray-report-dir",
        str(pytester.path / "report"),
        *args,
    )


def _fails(result: pytest.RunResult, check: str, *lines: str, param: str = "broken") -> None:
    """``check`` failed, and its report holds ``lines`` (in order; E-prefixed or raw)."""
    result.stdout.fnmatch_lines([f"*_ {check}?{param}? _*", *lines])


def test_spread_fails_naming_the_node_that_never_ran_work(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "SpreadIdle", "spread_from_inside")
    result.assert_outcomes(failed=1)
    _fails(
        result,
        "test_spread_from_inside_every_node_runs_work",
        "E * AssertionError: inside: node(s) never ran work: worker1/10.0.0.2 (bbbb2222bbbb); *",
    )


def test_spread_fails_on_misplaced_tasks_and_a_short_tally() -> None:
    """The other two breaks of the same check: a task ran elsewhere; a tally that does not add up."""
    from provisioners.contract.base import ClusterHandle

    cluster = ClusterHandle("m", 1, "2.60.0", "3.11", "h:6379")
    alive = [{"node_id": "aaaa", "hostname": "head", "ip": "10.0.0.1"}]
    load = {"tasks": 0, "submitted": 0, "done": 0, "seconds": 0.0, "tasks_per_s": 0.0}
    misplaced = {
        "alive": alive,
        "joined": [],
        "load": load,
        "pinned": {"aaaa": 2},
        "misplaced": [["aaaa", "zzzz"]],
    }
    with pytest.raises(AssertionError, match=r"pinned tasks ran on another node .*'zzzz'"):
        check_spread({**misplaced, "spread": {}, "iterations": 2}, cluster, "outside", [])
    short = {
        "alive": alive,
        "joined": [],
        "load": load,
        "pinned": {"aaaa": 1},
        "misplaced": [],
        "spread": {},
    }
    with pytest.raises(AssertionError, match=r"outside: tally \{'aaaa': 1\} sums to 1"):
        check_spread({**short, "iterations": 3}, cluster, "outside", [])


def test_dashboard_job_check_fails_with_the_jobs_logs(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "JobsFail", "job_succeeds")
    result.assert_outcomes(failed=1)
    _fails(
        result,
        "test_dashboard_job_succeeds_with_logs",
        "E * AssertionError: job raysubmit_rc ended FAILED; logs:",
        "E * ModuleNotFoundError: No module named 'ray'",
    )


def test_dashboard_node_list_check_fails_naming_what_it_shows(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "DashboardMissesNode", "nodes_match")
    result.assert_outcomes(failed=1)
    _fails(
        result,
        "test_dashboard_nodes_match_expected",
        "the dashboard's node list never showed the cluster's nodes: timed out after 1 s"
        " waiting for 2 alive Ray node(s) at * (summary view); last seen: 1 alive: head/10.0.0.1/*",
    )


def test_port_forward_check_fails_when_the_port_stays_held(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "TwoNodes", "reachable_on_loopback")
    result.assert_outcomes(failed=2)
    for port, remote in (("client", 10001), ("dashboard", 8265)):
        _fails(
            result,
            "test_port_forward_reachable_on_loopback_then_freed",
            f"E * AssertionError: local port * (forward of {remote}) is still held after the"
            " forward was closed",
            param=f"broken-{port}",
        )


def test_shared_memory_checks_fail_naming_each_node(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "SmallShm", "shm or object_store")
    result.assert_outcomes(failed=2)
    _fails(
        result,
        "test_shm_size_matches_request",
        "E * AssertionError: /dev/shm differs from the 2147483648 bytes (2048.0 MiB) asked for on"
        " 2 node(s): head: /dev/shm is 67108864 bytes (64.0 MiB); worker1: *",
    )
    _fails(
        result,
        "test_object_store_lives_in_shm_and_fits",
        "E * AssertionError: head: Ray put its object store (256.0 MiB) in /tmp, not /dev/shm,"
        " because /dev/shm is only 64.0 MiB; worker1: *. To give each node more shared memory,"
        " run each container with --shm-size=2g.",
    )


def test_image_checks_fail_naming_what_the_image_did(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "OtherImage", "test_image")
    result.assert_outcomes(failed=2)
    _fails(
        result,
        "test_image_runs_ray_task_alone",
        "E * "
        + literal(
            "AssertionError: a Ray task in a lone container of the image returned ['3'],"
            " expected ['2']; output:"
        ),
    )
    _fails(
        result,
        "test_image_versions_match_cluster",
        "E * "
        + literal(
            "AssertionError: the image has Ray/Python ['2.9.3', '3.10'], but the cluster reports"
            " ['2.60.0', '3.11']"
        ),
    )


def test_launcher_checks_fail_naming_what_they_saw(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "LostLauncher", "test_launcher")
    result.assert_outcomes(failed=4)
    _fails(
        result,
        "test_launcher_exec_status_shows_every_node",
        "E * AssertionError: `ray exec cluster.yaml 'ray status'` shows 1 active or idle node(s),"
        " expected 2; output:",
    )
    _fails(
        result,
        "test_launcher_monitor_log_shows_autoscaler_lines",
        "E * AssertionError: `tail -n 100 /tmp/ray/session_latest/logs/monitor*` shows no"
        " autoscaler log lines; output:",
    )
    _fails(
        result,
        "test_launcher_head_ssh_runs_commands",
        "E * AssertionError: plain ssh to the head did not report Ray 2.60.0:",
    )
    _fails(
        result,
        "test_launcher_setup_package_imports_on_every_node",
        "E * "
        + literal(
            "AssertionError: setup_commands package(s) ['boto3'] missing on: {'worker1"
            " (bbbb2222bbbb)': {'boto3': \"ModuleNotFoundError: No module named 'boto3'\"}}"
        ),
    )


def test_autoscaling_checks_fail_naming_the_phase(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "NeverScales", "autoscaling")
    # The fourth, no Pending pods left, needs SupportsPendingNodes (test_autoscaling_suite.py).
    result.assert_outcomes(failed=3, skipped=1)
    _fails(
        result,
        "test_autoscaling_adds_workers_for_queued_work",
        "E * AssertionError: no new node within 1s of queueing 4 tasks of 1.0 CPU (head has 0.0);"
        " nodes alive over time: 1 at 0.0s; *",
    )
    _fails(
        result,
        "test_autoscaling_new_workers_run_the_work",
        "E * Failed: no worker was added, so none could run work; *",
    )
    _fails(
        result,
        "test_autoscaling_removes_idle_workers",
        "E * Failed: the work never finished, so scale-down was not observed; *",
    )


def test_node_loss_checks_fail_when_ray_never_reports_or_replaces(
    pytester: pytest.Pytester,
) -> None:
    result = _run(pytester, "Undying", "node_loss")
    result.assert_outcomes(failed=2)
    _fails(
        result,
        "test_node_loss_killed_worker_is_reported_dead",
        "E *.WaitTimeout: timed out after 1 s waiting for Ray to report the killed worker"
        " bbbb2222bbbb at 10.0.0.2 as DEAD; last seen: aaaa1111aaaa at 10.0.0.1 (head);"
        " bbbb2222bbbb at 10.0.0.2 (worker1)",
    )
    _fails(
        result,
        "test_node_loss_lost_worker_is_replaced",
        "E *.WaitTimeout: timed out after 1 s waiting for 2 alive nodes again, one of them new;"
        " last seen: *",
    )


def test_spread_allows_an_autoscalers_nodes_only_up_to_its_max() -> None:
    """Nodes an autoscaler added for an earlier load may still be alive, never more than it may add."""
    from provisioners.contract.base import ClusterHandle

    cluster = ClusterHandle("m", 1, "2.60.0", "3.11", "h:6379")
    alive = [{"node_id": n, "hostname": n, "ip": "10.0.0.1"} for n in ("aaaa", "bbbb", "cccc")]
    load = {"tasks": 3, "submitted": 3, "done": 3, "seconds": 1.0, "tasks_per_s": 3.0}
    result = {
        "alive": alive,
        "joined": [],
        "load": load,
        "misplaced": [],
        "iterations": 1,
        "pinned": {"aaaa": 1, "bbbb": 1, "cccc": 1},
        "spread": {"aaaa": 3},
    }
    check_spread(result, cluster, "outside", [], 2)
    with pytest.raises(
        AssertionError, match=r"3 alive node\(s\), expected 1 \(\+ up to 1 autoscaled\)"
    ):
        check_spread(result, cluster, "outside", [], 1)
    with pytest.raises(AssertionError, match=r"3 alive node\(s\), expected 1: "):
        check_spread(result, cluster, "outside", [])
