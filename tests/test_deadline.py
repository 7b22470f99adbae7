"""The one shape of "time left": provisioners.contract.base.Deadline, carried by the spec."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from provisioners.contract.base import MIN_WAIT_S, ClusterSpec, Deadline, Timeouts


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A monotonic clock the test moves by hand."""
    now = [1000.0]
    monkeypatch.setattr(
        "provisioners.contract.base.time", SimpleNamespace(monotonic=lambda: now[0])
    )
    return now


def test_remaining_counts_down_and_never_goes_negative(clock: list[float]) -> None:
    deadline = Deadline.after(60, "provisioning")
    assert deadline.remaining() == 60
    clock[0] += 45
    assert deadline.remaining() == 15
    assert not deadline.expired()
    clock[0] += 100
    assert deadline.remaining() == 0.0
    assert deadline.expired()


def test_a_wait_gets_what_is_left_at_most_its_cap_and_at_least_one_try(
    clock: list[float],
) -> None:
    deadline = Deadline.after(60, "provisioning")
    assert deadline.left() == 60
    assert deadline.left(20) == 20
    clock[0] += 50
    assert deadline.left(20) == 10
    clock[0] += 30
    assert deadline.left(20) == MIN_WAIT_S


def test_a_named_part_ends_with_its_own_budget_or_the_step_whichever_is_first(
    clock: list[float],
) -> None:
    step = Deadline.after(60, "provisioning")
    down = step.part("ray down", 20)
    assert (down.what, down.remaining()) == ("ray down", 20)
    late = step.part("the operator", 500)
    assert late.remaining() == 60  # never past the step it is part of
    clock[0] += 30
    assert step.part("ray down", 20).remaining() == 20
    assert step.part("the rest", 50).remaining() == 30


def test_the_spec_carries_the_provision_deadline_and_the_harness_restarts_it(
    clock: list[float], tmp_path: Path
) -> None:
    spec = ClusterSpec("m", "r1", tmp_path, timeouts=Timeouts(provision=120))
    assert spec.deadline.remaining() == 120  # built outside the harness: from its creation
    clock[0] += 100
    assert spec.deadline.remaining() == 20
    started = spec.provisioning()
    assert (started.deadline.what, started.deadline.remaining()) == ("provisioning", 120)
    assert started == spec  # the same request; only the clock moved
