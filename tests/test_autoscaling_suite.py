"""The autoscaling suite's checks (suites/test_autoscaling.py) against fakes of a scaled cluster.

A fake's in-cluster run prints what a scale-up / work / scale-down round saw; its platform then
lists what it still has pending. The pending check must fail naming a machine left Pending
(KubeRay #3738, #1108: Pending pods left behind), and the suite skips where no autoscaler runs.
"""

from __future__ import annotations

import pytest
from harness_fakes import REPO, modes, run, write_fakes

SUITE = REPO / "suites" / "test_autoscaling.py"

AUTOSCALING_FAKES = '''
import json

from fakemod import FakeProvisioner
from provisioners.contract.base import AutoscalingLimits

ROUND = {
    "baseline": ["head", "w1", "w2"], "tasks": 4, "first_new_s": 12.0, "done_s": 31.0,
    "peak": 5, "tally": {"new1": 2, "new2": 2}, "scale_down_s": 20.0,
    "timeline": [[0.0, 3], [12.0, 4], [14.5, 5], [51.0, 3]], "alive_at_end": 3,
}


class Scaled(FakeProvisioner):
    """Two workers came for the work and went once idle; nothing left pending."""

    pending = []

    def autoscaling_limits(self):
        return AutoscalingLimits(
            min_workers=0, max_workers=2, cpus_per_worker=2.0, head_cpus=1.0,
            idle_timeout_s=12.0, scale_up_timeout_s=5.0, scale_down_timeout_s=5.0,
        )

    def run_in_cluster(self, script, timeout):
        return "RESULT " + json.dumps(ROUND)

    def pending_nodes(self):
        return list(self.pending)


class LeftPending(Scaled):
    """A third worker asked for beyond what the node can hold, Pending for ever."""

    pending = ["rc-ray-autoscale-worker-x7k2q: Pending, not ready"]


class OwnResource(Scaled):
    """A cloud's autoscaled type: only its workers have the resource the work asks for."""

    tally = ROUND["tally"]

    def autoscaling_limits(self):
        return AutoscalingLimits(
            min_workers=0, max_workers=2, cpus_per_worker=0.0, head_cpus=0.0,
            idle_timeout_s=12.0, scale_up_timeout_s=5.0, scale_down_timeout_s=5.0,
            resource="rc_autoscaled",
        )

    def run_in_cluster(self, script, timeout):
        assert 'LIMITS = "{' in script and 'rc_autoscaled' in script, script[:300]
        return "RESULT " + json.dumps({**ROUND, "tally": self.tally})


class OwnResourceRanOnHead(OwnResource):
    """Work asking for the new workers' own resource ran on the head: it cannot have."""

    tally = {"head": 1, "new1": 2, "new2": 1}


class NoAutoscaler(Scaled):
    def autoscaling_limits(self):
        return None


ZOMBIE = "ConnectionAbortedError: Initialization failure from server: psutil.ZombieProcess"


class FlakyDriver(Scaled):
    """The in-cluster driver (a Ray Client) meets Ray's proxier bug once, then runs."""

    calls = 0

    def run_in_cluster(self, script, timeout):
        FlakyDriver.calls += 1
        if FlakyDriver.calls == 1:
            raise RuntimeError("Job ns/rc-job-1 failed; its log:\\n" + ZOMBIE)
        return super().run_in_cluster(script, timeout)


class AlwaysZombie(Scaled):
    def run_in_cluster(self, script, timeout):
        raise RuntimeError("Job ns/rc-job-1 failed; its log:\\n" + ZOMBIE)
'''


@pytest.fixture(autouse=True)
def _fakes(pytester: pytest.Pytester) -> None:
    write_fakes(pytester)
    pytester.makepyfile(scalefakes=AUTOSCALING_FAKES, test_autoscaling=SUITE.read_text())


def _run(pytester: pytest.Pytester, cls: str, *args: str) -> pytest.RunResult:
    argv = [a.replace("fakemod:", "scalefakes:") for a in modes(f"fake={cls}")]
    return run(pytester, *argv, "-rs", *args)


def test_scaled_cluster_passes(pytester: pytest.Pytester) -> None:
    _run(pytester, "Scaled").assert_outcomes(passed=4)


def test_pod_left_pending_fails_naming_it(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "LeftPending", "--ray-preflight-timeout=2")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*no machine the autoscaler asked for left pending*last seen:"
            " rc-ray-autoscale-worker-x7k2q: Pending, not ready*",
        ]
    )


def test_skipped_without_an_autoscaler(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "NoAutoscaler")
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["*fake: this run's cluster has no autoscaler*"])


def test_a_known_flake_of_the_in_cluster_driver_is_retried_and_recorded(
    pytester: pytest.Pytester,
) -> None:
    report = pytester.path / "report"
    result = _run(pytester, "FlakyDriver", f"--ray-report-dir={report}")
    result.assert_outcomes(passed=4)
    results = (report / "results.json").read_text()
    assert "ray-project/ray#63202" in results  # recorded, not hidden


def test_a_known_flake_three_times_in_a_row_fails_the_round(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "AlwaysZombie")
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(["*psutil.ZombieProcess*"])


def test_work_on_a_resource_only_new_workers_have(pytester: pytest.Pytester) -> None:
    _run(pytester, "OwnResource").assert_outcomes(passed=4)
    result = _run(pytester, "OwnResourceRanOnHead")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        ["*1 task(s) ran on old nodes that lack the resource 'rc_autoscaled'*"]
    )
