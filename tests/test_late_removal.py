"""Removal after an interrupted create: the engine may finish the request after the run stopped
waiting for it (a cold trial left a vm worker container, created after teardown had listed the
run's objects). Against the real engine: a container made a second after removal started."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import pytest

from provisioners.util import containers, nodeimage
from provisioners.util.naming import run_name

MODE = "late"
DELAY_S = 1.0

pytestmark = pytest.mark.skipif(
    bool(containers.engine_problem(None)), reason="no Docker engine answers"
)


def _create_later(client: Any, image: str, run_id: str, name: str) -> threading.Thread:
    def create() -> None:
        time.sleep(DELAY_S)
        client.containers.create(
            image,
            ["true"],
            name=run_name(run_id, MODE, name),
            labels=containers.labels(run_id, MODE),
        )

    thread = threading.Thread(target=create)
    thread.start()
    return thread


def test_removal_after_an_interrupted_create_finds_what_the_engine_made_late() -> None:
    image = nodeimage.ensure_node_image(
        lambda _line: None, 900, force_build=True
    )  # prepare built it
    client = containers.docker_client(None)
    run_id = f"t-late-{secrets.token_hex(3)}"
    late: threading.Thread | None = None
    try:
        late = _create_later(client, image, run_id, "first")
        containers.remove(client, run_id, MODE)  # a plain removal is over before it lands
        late.join()
        assert len(containers.run_objects(client, run_id, MODE).containers) == 1

        late = _create_later(client, image, run_id, "second")
        t0 = time.monotonic()
        containers.remove(client, run_id, MODE, late=True)
        late.join()
        assert containers.run_objects(client, run_id, MODE).containers == []
        assert time.monotonic() - t0 >= DELAY_S + containers.LATE_QUIET_S
    finally:
        if late is not None:
            late.join()  # its container exists before the last removal looks
        containers.remove(client, run_id, MODE)
        client.close()
