"""Tests of the harness itself: pytester runs with fake provisioners, no real cluster needed.

Every test runs under the offline guard (``fixtures/offline.py``): an image pull, a registry
login or a lookup of a name that is not this machine's fails the test that made it, even when
the code under test swallowed the refusal. A test that checks how the harness reports a pull
that cannot happen says so with ``@pytest.mark.offline_pull_refused``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixtures.offline import offline

pytest_plugins = ["pytester"]

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
