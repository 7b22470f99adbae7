"""Firewall rules a run adds on this host, each named by a comment of the run and counted.

Two kinds: the rehearsals' :class:`~provisioners.rehearsal.DropRule` (instances may not open
connections to this host) and :class:`EgressRule` (containers of a run network have no route
off this machine). Each is added, checked, read and removed by its full spec, so exactly the
run's rule goes; its packet counter says whether anything tried.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from provisioners import runstate
from provisioners.base import InventoryItem
from provisioners.naming import run_name
from provisioners.options import Option
from provisioners.runner import run, run_full
from provisioners.waits import wait_for

#: The container modes' switch (``make test`` sets it): their run network gets an egress rule.
NO_EGRESS = Option.switch(
    "no-egress",
    "docker, vm: containers of the run get no route off this machine (an iptables rule whose "
    "counter teardown checks; needs root)",
)


class CountedRule:
    """Add, check, remove and count one iptables rule given by :meth:`spec` (chain first)."""

    comment: str

    def spec(self) -> list[str]:
        raise NotImplementedError

    def add(self) -> None:
        run(["iptables", "-w", "5", "-I", *self.spec()], 30, what=f"iptables: add {self.comment}")

    def present(self) -> bool:
        done = run_full(["iptables", "-w", "5", "-C", *self.spec()], 30, check=False)
        return done.returncode == 0

    def remove(self) -> None:
        """Delete exactly this rule (every copy of it), by its full spec."""

        def gone() -> bool:
            if self.present():
                run_full(["iptables", "-w", "5", "-D", *self.spec()], 30, check=False)
            return not self.present()

        wait_for(gone, timeout=30, what=f"iptables rule {self.comment} to be gone", interval=0.1)

    def hits(self) -> int:
        """Packets the rule dropped so far (0 when it is absent)."""
        chain = self.spec()[0]
        out = run(["iptables", "-w", "5", "-nvxL", chain], 30, what="iptables: read counters")
        return sum(
            int(line.split()[0])
            for line in out.splitlines()
            if f"/* {self.comment} */" in line and line.split()[0].isdigit()
        )


@dataclass(frozen=True)
class EgressRule(CountedRule):
    """Drop what containers on ``bridge`` send anywhere but that bridge (``DOCKER-USER``).

    Forwarded traffic only: the host still reaches the containers (published ports, exec), and
    they it; the internet, other networks and the machine's LAN do not answer them. A lookup
    Docker's embedded DNS forwards for them leaves through the bridge too, and is counted.
    """

    bridge: str
    comment: str

    def spec(self) -> list[str]:
        return [
            "DOCKER-USER", "-i", self.bridge, "!", "-o", self.bridge,
            "-m", "comment", "--comment", self.comment, "-j", "DROP",
        ]  # fmt: skip


#: The DNS server the run's containers get with the egress lock: Docker's embedded resolver
#: answers the run's container names itself and forwards every other query (Ray's AAAA lookups
#: of the nodes' own names among them) to this upstream, which in the container's namespace is
#: its own loopback: the query fails at once, and no packet leaves for the host's resolver.
NO_UPSTREAM_DNS = ["127.0.0.1"]


class EgressLock:
    """A run network's :class:`EgressRule`: noted before it is added, counted when removed."""

    def __init__(self, run_id: str, mode: str, progress: Callable[[str], None]) -> None:
        self.run_id = run_id
        self.mode = mode
        self.progress = progress
        self.rule: EgressRule | None = None
        self.hits = 0  # packets it dropped, summed over removals

    @staticmethod
    def missing(mode: str) -> list[str]:
        """Why this machine cannot add the rule ({NO_EGRESS.flag} was asked for)."""
        if shutil.which("iptables") is None or os.geteuid() != 0:
            return [f"{mode}: {NO_EGRESS.flag} needs root and iptables (its rule keeps containers off the network)"]  # fmt: skip
        return []

    def add(self, network_id: str) -> None:
        rule = EgressRule(f"br-{network_id[:12]}", run_name(self.run_id, self.mode, "egress"))
        runstate.note(self.run_id, self.mode, "iptables-rule", spec=rule.spec())
        rule.add()
        self.rule = rule

    def remove(self) -> None:
        """Read the counter, then delete the rule; say so when anything tried to get out."""
        if self.rule is None:
            return
        hits = self.rule.hits()
        self.hits += hits
        self.rule.remove()
        self.rule = None
        if hits:
            self.progress(
                f"SAFETY: containers of the run tried to send {hits} packet(s) off this machine "
                f"(dropped by {run_name(self.run_id, self.mode, 'egress')})"
            )

    def inventory(self) -> list[InventoryItem]:
        items = []
        if self.rule is not None and self.rule.present():
            items.append(InventoryItem("iptables-rule", shlex.join(self.rule.spec()), self.run_id))
        if self.hits:
            # Not a leftover but a breach: reported where a clean run must show nothing.
            items.append(
                InventoryItem(
                    "blocked-connection", f"{self.hits} packet(s)", self.run_id,
                    "containers tried to reach past this machine",
                )
            )  # fmt: skip
        return items
