"""The counter at load, for real: each load check fails where it must, on a local Ray cluster.

The suites run on the ``external`` mode against a one-node cluster this module starts: the
SPREAD load past its deadline, and sessions at once through a forward that carries one at a
time. The report's load lines and the load check's own rules are checked offline.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness_fakes import REPO, run_subprocess

from provisioners.contract.base import ClusterHandle, ClusterSpec
from provisioners.modes.local import LocalProvisioner
from reports.html import _loads
from reports.model import Result
from suites.test_spread import check_load, check_together, parse_result, spread_source


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    provisioner = LocalProvisioner()
    spec = ClusterSpec(
        mode="local",
        run_id=f"load{int(time.time()) % 100000}",
        workdir=tmp_path_factory.mktemp("load"),
        workers=0,
    )
    try:
        yield provisioner.provision(spec)
    finally:
        provisioner.teardown()
    assert not provisioner.inventory()


def suites_in(pytester: pytest.Pytester) -> None:
    suites = pytester.mkdir("suites")
    shutil.copy(REPO / "suites" / "test_spread.py", suites / "test_spread.py")
    shutil.copytree(REPO / "suites" / "scripts", suites / "scripts")


def external(cluster: ClusterHandle, client: str, *args: str) -> list[str]:
    return [
        "suites",
        "--ray-modes=external",
        f"--ray-address={client}",
        f"--ray-dashboard-url={cluster.access['dashboard']}",
        "--ray-expect-nodes=1",
        "--ray-spread-iterations=1",
        *args,
    ]


def test_load_past_its_deadline_fails_saying_how_far_it_got(
    pytester: pytest.Pytester, local_cluster: ClusterHandle
) -> None:
    suites_in(pytester)
    # A million tasks cannot finish in the counter's 60 s (75% of the job timeout) here. The
    # other 20 s are for Ray's import, connect and shutdown: 10 s (of 40) were too few on two
    # busy cores in a cold trial; the default job timeout (180 s) leaves 45.
    result = run_subprocess(
        pytester,
        *external(local_cluster, local_cluster.access["ray client"], "--ray-job-timeout=80"),
        "-k",
        "from_outside",
        "--ray-spread-tasks=1000000",
    )
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "*outside: * of 1000000 SPREAD tasks finished in *tasks/s; * submitted) before the "
            "counter's 60 s deadline (75% of --ray-job-timeout)*"
        ]
    )


@contextlib.contextmanager
def one_session_at_a_time(host: str, port: int) -> Iterator[int]:
    """A forward that carries one connection at a time: while one is open, others are closed."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    busy = threading.Lock()
    stop = threading.Event()

    def pump(conn: socket.socket) -> None:
        with conn, socket.create_connection((host, port)) as up, selectors.DefaultSelector() as sel:
            sel.register(conn, selectors.EVENT_READ, up)
            sel.register(up, selectors.EVENT_READ, conn)
            while not stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        busy.release()
                        return
                    key.data.sendall(data)
        busy.release()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            if busy.acquire(blocking=False):
                threading.Thread(target=pump, args=(conn,), daemon=True).start()
            else:
                conn.close()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        acceptor.join(timeout=5)
        listener.close()


def test_sessions_through_a_forward_of_one_at_a_time_fail_naming_them(
    pytester: pytest.Pytester, local_cluster: ClusterHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    suites_in(pytester)
    # Ray Client gives up on a refused address after 1 + 2 + 2 s instead of 5 + 10 + 15.
    monkeypatch.setenv("RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S", "1")
    monkeypatch.setenv("RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S", "2")
    host, port = local_cluster.access["ray client"].removeprefix("ray://").rsplit(":", 1)
    with one_session_at_a_time(host, int(port)) as forward:
        result = run_subprocess(
            pytester,
            *external(local_cluster, f"ray://127.0.0.1:{forward}", "--ray-job-timeout=20"),
            "-k",
            "at_once",
            "--ray-client-sessions=3",
            "--ray-spread-tasks=3",
        )
    result.assert_outcomes(failed=1, deselected=2)
    # The one session the forward carried may finish or run out of time; the others are refused.
    result.stdout.fnmatch_lines(
        [
            # Through the harness's own forward of the external address (the relay).
            "E *AssertionError: ? of 3 Ray Client sessions at once through ray://127.0.0.1:* failed:",
            "*session ?: `*` exited 1",
        ]
    )
    result.stdout.fnmatch_lines(["*ConnectionError: ray client connection timeout*"])


LOAD = {"tasks": 4, "submitted": 4, "done": 4, "seconds": 2.0, "tasks_per_s": 2.0}


@pytest.mark.parametrize(
    ("load", "tally", "message"),
    [
        (
            {**LOAD, "done": 3, "tasks_per_s": 1.5},
            {"a": 3},
            "x: 3 of 4 SPREAD tasks finished in 2.0 s (1.5 tasks/s; 4 submitted) before the "
            "counter's 9 s deadline (75% of --ray-job-timeout); tally so far {'a': 3}",
        ),
        (
            LOAD,
            {"a": 3, "z": 1},
            "x: SPREAD tasks ran on nodes the cluster does not list: {'z': 1}",
        ),
    ],
    ids=["unfinished", "stranger"],
)
def test_load_check_fails_on_unfinished_or_strange_tasks(
    load: dict[str, Any], tally: dict[str, int], message: str
) -> None:
    with pytest.raises(AssertionError) as failed:
        check_load({"load": {**load, "deadline_s": 9}, "spread": tally}, {"a"}, "x")
    assert str(failed.value).splitlines()[0] == message


def test_report_shows_each_load_with_its_throughput() -> None:
    def result(check: str, props: dict[str, Any]) -> Result:
        return Result(check, "m", "passed", 1.0, "", f"s.py::{check}[m]", props)

    html = _loads(
        [
            result(
                "spread",
                {
                    "spread_outside_load": {
                        **LOAD,
                        "tasks": 10000,
                        "done": 10000,
                        "tasks_per_s": 812.34,
                    }
                },
            ),
            result("sessions", {"sessions_load": {**LOAD, "sessions": 8, "tasks_per_s": 2.0}}),
            result("other", {"x_load": "not a load", "spread_outside_pinned": {"a": 1}}),
        ]
    )
    assert html == (
        '<div class="load" data-load="spread_outside_load">load, outside: 10,000 of 10,000 '
        "tasks, 812.3 tasks/s</div>"
        '<div class="load" data-load="sessions_load">8 sessions at once: 4 of 4 tasks, '
        "2.0 tasks/s</div>"
    )


def test_spread_options_reject_zero(pytester: pytest.Pytester) -> None:
    for flag in ("--ray-spread-tasks", "--ray-client-sessions"):
        result = pytester.runpytest("-p", "fixtures.plugin", f"{flag}=0")
        result.stderr.fnmatch_lines([f"*{flag} '0': must be at least 1*"])
        assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_sessions_that_never_meet_fail_naming_what_each_saw(
    local_cluster: ClusterHandle, tmp_path: Path
) -> None:
    # Two sessions due, one comes: it waits its barrier out, runs the counter, and says so.
    source = spread_source(1, 2, job_timeout=60, barrier_s=2)
    script = tmp_path / "spread.py"
    script.write_text(source)
    address = local_cluster.access["ray client"]
    barrier = tmp_path / "connected"
    barrier.mkdir()
    run = subprocess.run(
        [sys.executable, str(script), address, str(barrier), "2", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = parse_result(run.stdout)
    with pytest.raises(AssertionError) as apart:
        check_together([result], 2, address)
    assert re.match(
        rf"the 2 sessions were never all connected at once through {re.escape(address)}: "
        r"session 1 saw 1 connected after 2\.\d s$",
        str(apart.value).splitlines()[0],
    ), str(apart.value)
    # The same result meets a count of one: the check passes when they were all there.
    check_together([result], 1, address)
