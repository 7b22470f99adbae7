"""Tests of the harness itself: pytester runs with fake provisioners, no real cluster needed.

Every test runs under the offline guard (``fixtures/offline.py``): an image pull, a registry
login or a lookup of a name that is not this machine's fails the test that made it, even when
the code under test swallowed the refusal. A test that checks how the harness reports a pull
that cannot happen says so with ``@pytest.mark.offline_pull_refused``.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.offline import offline
from provisioners.util import runstate

pytest_plugins = ["pytester"]

# The interrupt tests deliver Ctrl-C as a terminal does. Started in the background by a
# non-interactive shell (`cmd &`), this process inherits SIGINT ignored; Python then sets no
# KeyboardInterrupt handler, and every run it starts inherits the ignoring (the cold trial ran
# so: each SIGINT test saw a run that never stopped). A handler, unlike SIG_IGN, is reset to
# the default in the runs it starts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

PULL_REFUSED = "offline_pull_refused"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{PULL_REFUSED}: the test expects an image pull, refused by the offline guard, and checks how it is reported",
    )


@pytest.fixture(autouse=True)
def _offline(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test that tried to reach the internet (a pull, a login, a non-local lookup)."""
    with offline() as attempts:
        yield
    seen = attempts.seen
    if request.node.get_closest_marker(PULL_REFUSED):
        seen = [s for s in seen if not s.startswith("image pull ")]
    if seen:
        pytest.fail(
            "the test tried to reach the internet (refused): " + "; ".join(seen), pytrace=False
        )


@pytest.fixture(autouse=True)
def _tidy_run_notes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Remove the notes of run ids a test drove by hand (a mode planned, never held or torn
    down), so the sweep after ``make test`` lists only what real runs left."""
    noted: set[str] = set()
    note = runstate.note

    def recording(run_id: str, *args: Any, **kwargs: Any) -> None:
        noted.add(run_id)
        note(run_id, *args, **kwargs)

    monkeypatch.setattr(runstate, "note", recording)
    yield
    for run_id in noted:
        if not runstate.is_live(run_id):
            shutil.rmtree(runstate.run_dir(run_id), ignore_errors=True)
