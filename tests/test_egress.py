"""``--ray-no-egress``: the egress rule and its lock, on this host's real iptables.

The rule names an interface that does not exist, so it matches nothing but is added, listed,
counted and removed exactly as a run's is. A container that tries to leave is shown by the
docker mode's heavy test (tests/test_docker_mode.py).
"""

from __future__ import annotations

import os
import secrets
import shutil

import pytest

from provisioners.util import runstate
from provisioners.util.iptables import EgressLock, EgressRule, MetadataRule

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None, reason="needs root and iptables"
)


@needs_root
def test_egress_lock_is_noted_added_counted_and_removed() -> None:
    run_id = f"t-egress-{secrets.token_hex(3)}"
    said: list[str] = []
    lock = EgressLock(run_id, "docker", said.append)
    try:
        lock.add("0123456789abcdef0123")  # a network id: br-0123456789ab does not exist
        assert lock.rule == EgressRule("br-0123456789ab", f"rc-{run_id}-docker-egress")
        assert lock.rule.present()
        assert lock.rule.spec()[:6] == [
            "DOCKER-USER",
            "-i",
            "br-0123456789ab",
            "!",
            "-o",
            "br-0123456789ab",
        ]
        # Noted before it was added: a sweep after a crash finds it.
        assert lock.metadata == MetadataRule("br-0123456789ab", f"rc-{run_id}-docker-metadata")
        assert lock.metadata.present()
        assert [n["spec"] for n in runstate.notes(run_id, "iptables-rule")] == [
            lock.rule.spec(),
            lock.metadata.spec(),
        ]
        assert [i.kind for i in lock.inventory()] == ["iptables-rule", "iptables-rule"]
        rule, metadata = lock.rule, lock.metadata
        lock.remove()
        assert not rule.present()
        assert not metadata.present()
        assert lock.inventory() == []
        assert said == []  # nothing tried to get out
    finally:
        lock.remove()
        shutil.rmtree(runstate.run_dir(run_id), ignore_errors=True)


def test_no_egress_without_root_is_a_clear_prerequisite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert EgressLock.missing() == [
        "--ray-no-egress needs root and iptables (its rule keeps containers off the network)"
    ]
