"""Commands run in other threads end with an interrupt too (the signal reaches only the main thread)."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import psutil
import pytest
from harness_fakes import REPO

from provisioners.util import runner
from provisioners.util.runner import CommandError, kill_running, run_full
from provisioners.util.waits import wait_for


def test_kill_running_ends_a_command_another_thread_waits_on_and_its_children() -> None:
    outcome: dict[str, str] = {}

    def work() -> None:
        try:
            run_full(["sh", "-c", "sleep 60 & sleep 60"], 120, what="sleeper")
        except CommandError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=work)
    thread.start()
    wait_for(lambda: bool(runner._running), timeout=10, what="the command to start")
    [group] = runner._running
    t0 = time.monotonic()
    assert kill_running() == [group]
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - t0 < 10
    assert outcome["error"].startswith("sleeper exited -9")
    # The background sleep went with its session (a zombie awaiting init's reaping is gone).
    # SIGKILL is delivered at once but a busy machine runs the exit a moment later (CI saw it).
    wait_for(
        lambda: _alive_in_group(group) == [],
        timeout=10,
        what=f"process group {group} to be gone",
        last_seen=lambda: f"alive: {_alive_in_group(group)}",
    )
    assert not runner._running


def _alive_in_group(group: int) -> list[int]:
    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == group and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


PREPARE_WITH_A_SLOW_STEP = textwrap.dedent(
    """
    import sys
    from provisioners.commands import prepare
    from provisioners.util.runner import run_full

    def slow(say, timeout):
        say("building")
        run_full(["sleep", "60"], timeout)
        return "never"

    prepare.STEPS = (prepare.Step("slow", "a step that takes a minute", 120, slow),)
    prepare.CHAINS = (("slow",),)
    sys.exit(prepare.main([]))
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_prepare_interrupted_ends_its_build_commands_and_exits_130(signum: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PREPARE_WITH_A_SLOW_STEP],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "a step that takes a minute" in line, line
        assert "building" in proc.stderr.readline()
        time.sleep(0.5)  # the sleep has started
        t0 = time.monotonic()
        proc.send_signal(signum)
        rest = proc.stderr.read()
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - t0 < 15, "prepare waited for its build past the interrupt"
    assert proc.returncode == 130, rest
    assert "prepare: interrupted after" in rest
    assert "1 running build command(s) ended" in rest


def test_prepare_runs_an_optional_step_only_when_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from provisioners.commands import prepare

    built: list[str] = []

    def step(name: str, default: bool) -> prepare.Step:
        def build(_say: prepare.Say, _timeout: float) -> str:
            built.append(name)
            return name

        return prepare.Step(name, name, 5, build, default)

    monkeypatch.setattr(prepare, "STEPS", (step("always", True), step("extra", False)))
    monkeypatch.setattr(prepare, "CHAINS", (("always", "extra"),))
    assert prepare.main([]) == 0
    assert built == ["always"]
    assert prepare.main(["--only", "extra"]) == 0
    assert built == ["always", "extra"]
    assert "ready in" in capsys.readouterr().err


def _toy_wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel pip accepts: toy 1.0."""
    path = directory / "toy-1.0-py3-none-any.whl"
    files = {
        "toy.py": "",
        "toy-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: toy\nVersion: 1.0\n",
        "toy-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as whl:
        for name, text in files.items():
            whl.writestr(name, text)
        record = [f"{name},," for name in files] + ["toy-1.0.dist-info/RECORD,,"]
        whl.writestr("toy-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


@pytest.mark.parametrize(
    ("refusals", "fetched"), [(2, True), (runner.DOWNLOAD_ATTEMPTS, False)], ids=["2", "all"]
)
def test_pip_download_runs_again_after_a_refused_answer(
    tmp_path: Path, refusals: int, fetched: bool
) -> None:
    """A package index on loopback answers the first ``refusals`` page requests with 404 (pip
    does not retry that itself): the wheel arrives past two refusals, not past every run's."""
    wheel = _toy_wheel(tmp_path)
    asked: list[str] = []

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            if self.path.startswith("/simple/toy") and asked.count(self.path) <= refusals:
                self.send_error(404)
            elif self.path.startswith("/simple/toy"):
                body = f'<a href="/files/{wheel.name}">{wheel.name}</a>'.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(200)
                self.end_headers()
                self.wfile.write(wheel.read_bytes())

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dest = tmp_path / "dest"
    # --isolated: no index from a pip config or PIP_* variable is asked, only this one.
    args = ["toy==1.0", "--isolated", "--no-deps", "--no-cache-dir", "-d", str(dest)]
    args += ["--index-url", f"http://127.0.0.1:{server.server_address[1]}/simple"]
    try:
        if fetched:
            runner.pip_download(args, 120, what="pip download of toy")
            assert (dest / wheel.name).exists()
        else:
            with pytest.raises(CommandError, match="pip download of toy exited 1"):
                runner.pip_download(args, 120, what="pip download of toy")
            assert not (dest / wheel.name).exists()
    finally:
        server.shutdown()
        server.server_close()
    pages = [p for p in asked if p.startswith("/simple/toy")]
    assert len(pages) == (refusals + 1 if fetched else refusals), asked
