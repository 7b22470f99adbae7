"""``provisioners.util.waits.file_lock``: one build per machine, a bounded wait for it, said once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioners.contract.base import Deadline
from provisioners.util.waits import WaitTimeout, file_lock

#: Holds the lock in another process (a build elsewhere) until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from provisioners.contract.base import Deadline
from provisioners.util.waits import file_lock
with file_lock(Path(sys.argv[1]), Deadline.after(30, "the build"), print, "build"):
    print("held", flush=True)
    sys.stdin.read()
"""


def holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_held_lock_is_waited_for_within_the_deadline_and_named(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "build.lock"
    said: list[str] = []
    proc = holder(path)
    try:
        t0 = time.monotonic()
        with (
            pytest.raises(WaitTimeout, match=r"another process's node image build to release"),
            file_lock(path, Deadline.after(1.0, "the build"), said.append, "node image build"),
        ):
            pass
        assert 0.9 < time.monotonic() - t0 < 10
        assert said == ["waiting for another process's node image build ..."]
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    # Released (the holder exited): taken at once, and nothing said.
    said.clear()
    with file_lock(path, Deadline.after(1.0, "the build"), said.append, "node image build"):
        assert said == []
    # A second holder after ours released gets it too: the lock is really given back.
    holder(path).communicate(timeout=30)
