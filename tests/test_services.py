"""The run's service containers through testcontainers (provisioners/util/services.py), for real.

Each one is labelled with the run and found by the sweep after a crash, never pulled, bounded
by its wait strategy, and a failed start names the container, quotes its log and removes it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from leftovers import labeled, sweep
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from provisioners.contract.base import RUN_ID_LABEL, ProvisionError
from provisioners.util import nodeimage
from provisioners.util.containers import MODE_LABEL, docker_client, engine_problem, labels
from provisioners.util.services import Service

pytestmark = pytest.mark.skipif(engine_problem(None) is not None, reason="needs a Docker engine")


@pytest.fixture
def run_id() -> Iterator[str]:
    run = f"t-svc-{secrets.token_hex(3)}"
    yield run
    sweep("--run-id", run)  # whatever a failing test left


@pytest.fixture(scope="module")
def image() -> str:
    return nodeimage.ensure_node_image(print, 1800, force_build=True)  # never pulled


def _service(image: str, run_id: str, script: str, ready: str, **kw: object) -> Service:
    return Service(
        image,
        ["sh", "-c", script],
        name=f"rc-{run_id}-svc",
        labels=labels(run_id, "svc"),
        wait=LogMessageWaitStrategy(ready).with_poll_interval(0.2),
        **kw,  # type: ignore[arg-type]
    )


def test_a_ready_service_carries_the_run_labels_and_the_sweep_reaps_it(
    image: str, run_id: str
) -> None:
    service = _service(image, run_id, "echo ready-marker; exec sleep 300", "ready-marker")
    service.start_within(60)
    box = service.get_wrapped_container()
    assert box.labels[RUN_ID_LABEL] == run_id
    assert box.labels[MODE_LABEL] == "svc"
    assert box.labels["org.testcontainers"] == "true"  # testcontainers' own, beside ours
    assert labeled(run_id) == {f"container rc-{run_id}-svc"}
    # Ryuk is off: no reaper container was started (nor pulled) for this session.
    client = docker_client(timeout=60)
    try:
        reapers = [c.name for c in client.containers.list(all=True) if "ryuk" in str(c.image)]
    finally:
        client.close()
    assert reapers == []
    # A crash: nobody calls stop. The sweep finds it by the run's labels.
    done = sweep("--run-id", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert labeled(run_id) == set()


def test_a_service_that_exits_before_ready_is_named_with_its_log_and_removed(
    image: str, run_id: str
) -> None:
    service = _service(image, run_id, "echo planted-failure-line; exit 3", "never-printed")
    with pytest.raises(ProvisionError) as failed:
        service.start_within(60)
    message = str(failed.value)
    assert f"rc-{run_id}-svc not ready after" in message, message
    assert "planted-failure-line" in message, message
    assert labeled(run_id) == set()


def test_a_service_never_ready_fails_within_its_bound(image: str, run_id: str) -> None:
    service = _service(image, run_id, "echo started; exec sleep 300", "never-printed")
    t0 = time.monotonic()
    with pytest.raises(ProvisionError, match=r"not ready after \d+ s \(bounded by 3 s\)"):
        service.start_within(3)
    assert time.monotonic() - t0 < 30
    assert labeled(run_id) == set()


def test_an_absent_image_is_refused_never_pulled(run_id: str) -> None:
    service = _service("rc-absent/never:0", run_id, "true", "x")
    with pytest.raises(ProvisionError, match=r"not on this engine .*never pulled"):
        service.start_within(10)
    assert labeled(run_id) == set()
