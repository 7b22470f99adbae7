"""``provisioners.util.waits.wait_for_nodes``: the one wait for N alive Ray nodes, with fake listers."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from provisioners.util.waits import NodesTimeout, WaitGaveUp, wait_for_nodes

FAST = 0.01  # poll interval: the fakes answer at once


def node(name: str, ip: str, node_id: str) -> dict[str, Any]:
    return {"hostname": name, "ip": ip, "node_id": node_id}


HEAD = node("n1", "10.0.0.1", "aaaaaaaa11")
W1 = node("n2", "10.0.0.2", "bbbbbbbb22")
W2 = node("n3", "10.0.0.3", "cccccccc33")


class Script:
    """A lister that answers each call with the next entry (an exception is raised); the last repeats."""

    def __init__(self, *answers: list[dict[str, Any]] | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> list[dict[str, Any]]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_returns_the_nodes_once_exactly_n_are_alive() -> None:
    lister = Script([], [HEAD], [HEAD, W1], [HEAD, W1, W2])
    assert wait_for_nodes(lister, 2, timeout=5, interval=FAST) == [HEAD, W1]
    assert lister.calls == 3


def test_exact_count_is_not_met_by_more_nodes() -> None:
    with pytest.raises(NodesTimeout) as info:
        wait_for_nodes(Script([HEAD, W1, W2]), 2, timeout=0.2, interval=FAST)
    assert str(info.value) == (
        "timed out after 0 s waiting for 2 alive Ray node(s); last seen: 3 alive: "
        "n1/10.0.0.1/aaaaaaaa, n2/10.0.0.2/bbbbbbbb, n3/10.0.0.3/cccccccc; 1 more than expected"
    )


def test_at_least_returns_every_alive_node_once_n_are() -> None:
    lister = Script([HEAD], [HEAD, W1, W2])
    assert wait_for_nodes(lister, 2, timeout=5, at_least=True, interval=FAST) == [HEAD, W1, W2]
    assert lister.calls == 2


def test_expected_nodes_must_be_among_the_alive_ones() -> None:
    # Two alive, but not the expected worker: the count alone does not end the wait.
    lister = Script([HEAD, W2], [HEAD, W2, W1])
    expected = {"10.0.0.1": "n1 (10.0.0.1)", "10.0.0.2": "n2 (10.0.0.2)"}
    nodes = wait_for_nodes(lister, 2, timeout=5, at_least=True, expected=expected, interval=FAST)
    assert nodes == [HEAD, W2, W1]
    assert lister.calls == 2


def test_timeout_names_each_expected_node_that_never_joined_and_the_last_probe_error() -> None:
    # The ssh probe fails with pages of output after the head was seen: its last line is quoted.
    lister = Script([HEAD], RuntimeError("Warning: known hosts\n" * 50 + "Connection refused"))
    expected = {"10.0.0.1": "n1 (10.0.0.1)", "10.0.0.2": "n2 (10.0.0.2)", "n3": "n3"}
    with pytest.raises(NodesTimeout) as info:
        wait_for_nodes(lister, 4, timeout=0.2, at_least=True, expected=expected, interval=FAST)
    assert str(info.value) == (
        "timed out after 0 s waiting for at least 4 alive Ray node(s); last seen: "
        "1 alive: n1/10.0.0.1/aaaaaaaa; never joined: n2 (10.0.0.2), n3, 1 more node(s); "
        "last probe error: RuntimeError: Connection refused"
    )
    assert info.value.never_joined == ["10.0.0.2", "n3"]


def test_a_probe_that_answers_again_clears_its_error() -> None:
    lister = Script(OSError("refused"), [HEAD])
    with pytest.raises(NodesTimeout) as info:
        wait_for_nodes(lister, 2, timeout=0.2, interval=FAST)
    assert str(info.value).endswith(
        "last seen: 1 alive: n1/10.0.0.1/aaaaaaaa; never joined: 1 more node(s)"
    )


def test_give_up_ends_the_wait_at_once_with_its_reason() -> None:
    lister = Script([HEAD])
    t0 = time.monotonic()
    with pytest.raises(WaitGaveUp) as info:
        wait_for_nodes(
            lister, 2, timeout=30, give_up=lambda: "worker (`ray start`) exited 3", interval=FAST
        )
    assert time.monotonic() - t0 < 5
    assert str(info.value) == (
        "gave up waiting for 2 alive Ray node(s): worker (`ray start`) exited 3"
    )
    assert lister.calls == 1


def test_progress_is_reported_on_each_change_of_the_count() -> None:
    lister = Script([], [HEAD], [HEAD], OSError("blip"), [HEAD, W1, W2], [HEAD, W1], [HEAD, W1, W2])
    seen: list[int] = []
    wait_for_nodes(lister, 3, timeout=0.3, on_change=seen.append, interval=FAST)
    assert seen == [1, 3]
    lister = Script([HEAD, W1, W2], [HEAD, W1], [HEAD, W1, W2])
    seen.clear()
    with pytest.raises(NodesTimeout):
        wait_for_nodes(lister, 4, timeout=0.2, on_change=seen.append, interval=FAST)
    assert seen == [3, 2, 3]


@pytest.fixture
def dashboard() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in dashboard whose state API lists the nodes in the returned list."""
    nodes: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert self.path.startswith("/api/v0/nodes")
            gone = node("gone", "10.0.0.9", "dead")  # a dead node is not counted
            listed = [
                {
                    "node_id": n["node_id"],
                    "node_name": n["hostname"],
                    "node_ip": n["ip"],
                    "state": s,
                }
                for n, s in [*((n, "ALIVE") for n in nodes), (gone, "DEAD")]
            ]
            body = json.dumps({"data": {"result": {"result": listed}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", nodes
    finally:
        server.shutdown()
        server.server_close()


def test_a_dashboard_url_is_listed_through_its_state_api(
    dashboard: tuple[str, list[dict[str, Any]]],
) -> None:
    url, nodes = dashboard
    nodes += [HEAD, W1]
    assert wait_for_nodes(url, 2, timeout=5, interval=FAST) == [HEAD, W1]
    with pytest.raises(NodesTimeout) as info:
        wait_for_nodes(url, 3, timeout=0.2, interval=FAST)
    assert str(info.value) == (
        f"timed out after 0 s waiting for 3 alive Ray node(s) at {url} (state view); last seen: "
        "2 alive: n1/10.0.0.1/aaaaaaaa, n2/10.0.0.2/bbbbbbbb; never joined: 1 more node(s)"
    )
