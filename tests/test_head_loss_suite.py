"""The head-loss suite (suites/test_head_loss.py) against fakes whose head dies.

A fake's dashboard is a loopback server listing nodes the way Ray's state API does; killing the
head changes what it lists (or stops it). The checks must pass where the platform recovers or
the harness names the dead head fast, and fail naming what did not come back otherwise.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
from harness_fakes import LEAK_SUITE, REPO, modes, run, write_fakes
from test_certify import TARGET

HEAD_LOSS_FAKES = '''
import contextlib
import json
import time
from dataclasses import replace

from fakemod import FakeProvisioner, json_server
from provisioners.contract.base import Endpoint

OLD_HEAD = {"node_id": "0ld0" * 14, "node_ip": "10.0.0.1", "node_name": "head", "is_head_node": True}
WORKER = {"node_id": "w0rk" * 14, "node_ip": "10.0.0.2", "node_name": "worker", "is_head_node": False}
NEW_HEAD = {"node_id": "new0" * 14, "node_ip": "10.0.0.9", "node_name": "head2", "is_head_node": True}
EXTRA = {"node_id": "auto" * 14, "node_ip": "10.0.0.7", "node_name": "auto", "is_head_node": False}


def alive(*nodes):
    return [{**n, "state": "ALIVE"} for n in nodes]


def dead(*nodes):
    return [{**n, "state": "DEAD", "end_time_ms": 1764150000000} for n in nodes]


class _Headed(FakeProvisioner):
    """A head and one worker; ``nodes()`` is what the state API lists at the moment."""

    killed_at = None

    def nodes(self):
        return alive(OLD_HEAD, WORKER)

    def provision(self, spec):
        fake = self
        self.server = json_server({
            "/api/version": {"ray_version": "2.60.0"},
            "/api/v0/nodes": lambda: {"data": {"result": {"result": fake.nodes()}}},
        })
        return replace(super().provision(spec), expected_nodes=2)

    @contextlib.contextmanager
    def port_forward(self, remote_port):
        yield Endpoint("127.0.0.1", self.server.server_address[1])

    def kill_head(self):
        self.killed_at = time.monotonic()
        return OLD_HEAD["node_ip"]

    def teardown(self):
        super().teardown()
        if getattr(self, "server", None):
            self.server.shutdown()
            self.server.server_close()


class RecoveringHead(_Headed):
    """An operator: a new head, and the worker back, two seconds after the kill."""

    def recovers_head(self):
        return True

    def nodes(self):
        if self.killed_at is None:
            return alive(OLD_HEAD, WORKER)
        if time.monotonic() - self.killed_at < 2:
            return dead(OLD_HEAD)
        return dead(OLD_HEAD) + alive(NEW_HEAD, WORKER)

    def run_in_cluster(self, script, timeout):
        nodes = [NEW_HEAD, WORKER]
        result = {
            "iterations": 3,
            "pinned": {n["node_id"]: 3 for n in nodes},
            "spread": {n["node_id"]: 1 for n in nodes},
            "joined": [], "load": {"tasks": 2, "submitted": 2, "done": 2, "seconds": 1.0, "tasks_per_s": 2.0, "deadline_s": 9.0},
            "misplaced": [],
            "alive": [{"node_id": n["node_id"], "hostname": n["node_name"], "ip": n["node_ip"], "head": n["is_head_node"]} for n in nodes],
        }
        return "RESULT " + json.dumps(result)


class AutoscaledAfterLoss(RecoveringHead):
    """An operator with an autoscaler: a worker it added is alive beside the expected ones."""

    def autoscaling_limits(self):
        from provisioners.contract.base import AutoscalingLimits

        return AutoscalingLimits(0, 1, 1.0, 1.0, 60.0, 60.0, 120.0)

    def nodes(self):
        return super().nodes() + (alive(EXTRA) if self.killed_at is not None else [])

    def run_in_cluster(self, script, timeout):
        result = json.loads(super().run_in_cluster(script, timeout)[len("RESULT "):])
        result["pinned"][EXTRA["node_id"]] = 3
        result["alive"].append({"node_id": EXTRA["node_id"], "hostname": "auto", "ip": EXTRA["node_ip"], "head": False})
        return "RESULT " + json.dumps(result)


class HeadlessOperator(RecoveringHead):
    """An operator whose new head comes, but whose worker never rejoins it (KubeRay #1141)."""

    def nodes(self):
        if self.killed_at is None:
            return alive(OLD_HEAD, WORKER)
        return dead(OLD_HEAD, WORKER) + alive(NEW_HEAD)


class DeadHead(_Headed):
    """Containers: the head's dashboard dies with it; nothing starts another."""

    def recovers_head(self):
        return False

    def kill_head(self):
        ip = super().kill_head()
        self.server.shutdown()
        self.server.server_close()
        self.server_port = self.server.server_address[1]
        return ip

    @contextlib.contextmanager
    def port_forward(self, remote_port):
        yield Endpoint("127.0.0.1", self.server.server_address[1])

    def teardown(self):
        FakeProvisioner.teardown(self)


class UndeadHead(_Headed):
    """Says it killed the head, but the head still answers."""

    def recovers_head(self):
        return False
'''

#: A check that runs after the head-loss checks (same marker, later file): it needs the dashboard.
LATER_CHECK = """
import pytest

pytestmark = pytest.mark.ray_head_loss


def test_later_needs_the_dashboard(ray_dashboard_url):
    assert ray_dashboard_url
"""


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(headfakes=HEAD_LOSS_FAKES)
    suites = pytester.mkdir("suites")
    (suites / "__init__.py").write_text("")
    for name in ("test_head_loss.py", "test_spread.py"):
        shutil.copy(REPO / "suites" / name, suites / name)
    shutil.copytree(REPO / "suites" / "scripts", suites / "scripts")


def _modes(cls: str) -> list[str]:
    return [arg.replace("fakemod:", "headfakes:") for arg in modes(f"fake={cls}")]


def _run(pytester: pytest.Pytester, cls: str, *args: str) -> pytest.RunResult:
    return run(pytester, "suites/test_head_loss.py", *_modes(cls), "--ray-head-loss", "-rs", *args)


def test_head_loss_is_opt_in(pytester: pytest.Pytester) -> None:
    result = run(pytester, "suites/test_head_loss.py", *_modes("RecoveringHead"))
    result.assert_outcomes(deselected=2)


def test_operator_that_recovers_passes(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "RecoveringHead", "--ray-node-timeout=10")
    result.assert_outcomes(passed=1, skipped=1)


def test_workers_an_autoscaler_added_may_be_alive_too(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "AutoscaledAfterLoss", "--ray-node-timeout=10")
    result.assert_outcomes(passed=1, skipped=1)


def test_worker_that_never_rejoins_fails_naming_it(pytester: pytest.Pytester) -> None:
    t0 = time.monotonic()
    result = _run(pytester, "HeadlessOperator", "--ray-node-timeout=3")
    result.assert_outcomes(failed=1, skipped=1)
    assert time.monotonic() - t0 < 60
    result.stdout.fnmatch_lines(
        [
            "*fake to recover from the head at 10.0.0.1 was killed at ??:??:?? by the head-loss"
            " check (the platform is to bring a new one): a new head and 1 worker(s) alive,"
            " within 6 s (2 x --ray-node-timeout)*last seen: head: new new0new0new0 at 10.0.0.9;"
            " workers alive: 0 of 1 ()*",
        ]
    )


def test_dead_head_makes_later_checks_fail_fast_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_zz_later=LATER_CHECK, test_zz_leak=LEAK_SUITE.read_text())
    t0 = time.monotonic()
    result = run(
        pytester,
        "suites/test_head_loss.py",
        "test_zz_later.py",
        "test_zz_leak.py",
        *_modes("DeadHead"),
        "--ray-head-loss",
        "--ray-preflight-timeout=5",
    )
    # The head-loss check passes (it saw the fast, named failure), the later check errors
    # naming the dead head, and the inventory and teardown checks still pass.
    result.assert_outcomes(passed=3, skipped=1, errors=1)
    assert time.monotonic() - t0 < 60
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_later_needs_the_dashboard?fake?*",
            "*fake: the head at 10.0.0.1 was killed at ??:??:?? by the head-loss check (nothing"
            " brings it back); its dashboard does not answer within 5 s (--ray-preflight-timeout)*",
        ]
    )


def test_head_that_still_answers_fails(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "UndeadHead")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*yet its dashboard still answers: the kill did not take the head away*"]
    )


def test_certification_never_kills_the_head(pytester: pytest.Pytester) -> None:
    target = pytester.path / "target.yaml"
    target.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in TARGET.items()))
    result = run(pytester, *_modes("RecoveringHead"), "--ray-head-loss", f"--ray-certify={target}")
    result.stderr.fnmatch_lines(["*--ray-head-loss cannot be combined with --ray-certify*"])
