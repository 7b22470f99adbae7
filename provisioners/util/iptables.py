"""Firewall rules a run adds on this host, each named by a comment of the run and counted.

Two kinds: the rehearsals' :class:`~provisioners.rehearsals.stage.DropRule` (instances may not open
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

from provisioners.contract.base import InventoryItem
from provisioners.contract.options import Option
from provisioners.util import runstate
from provisioners.util.naming import run_name
from provisioners.util.runner import run, run_full
from provisioners.util.waits import wait_for

#: The container modes' switch (``make test`` sets it): their run network gets an egress rule.
NO_EGRESS = Option.switch(
    "no-egress",
    "docker, vm: containers of the run get no route off this machine (an iptables rule whose "
    "counter teardown checks; needs root)",
)


def iptables() -> str | None:
    """The iptables binary: on PATH, or in the sbin dirs a clean shell's PATH lacks (a kept
    cluster's removal command runs there)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which("iptables", path=path)


def _iptables() -> str:
    return iptables() or "iptables"


class CountedRule:
    """Add, check, remove and count one iptables rule given by :meth:`spec` (chain first)."""

    comment: str

    def spec(self) -> list[str]:
        raise NotImplementedError

    def add(self) -> None:
        run([_iptables(), "-w", "5", "-I", *self.spec()], 30, what=f"iptables: add {self.comment}")

    def present(self) -> bool:
        done = run_full([_iptables(), "-w", "5", "-C", *self.spec()], 30, check=False)
        return done.returncode == 0

    def remove(self) -> None:
        """Delete exactly this rule (every copy of it), by its full spec."""

        def gone() -> bool:
            if self.present():
                run_full([_iptables(), "-w", "5", "-D", *self.spec()], 30, check=False)
            return not self.present()

        wait_for(gone, timeout=30, what=f"iptables rule {self.comment} to be gone", interval=0.1)

    def hits(self) -> int:
        """Packets the rule dropped so far (0 when it is absent)."""
        chain = self.spec()[0]
        out = run([_iptables(), "-w", "5", "-nvxL", chain], 30, what="iptables: read counters")
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
            "DOCKER-USER",
            "-i",
            self.bridge,
            "!",
            "-o",
            self.bridge,
            "-m",
            "comment",
            "--comment",
            self.comment,
            "-j",
            "DROP",
        ]


#: The DNS server the run's containers get with the egress lock: Docker's embedded resolver
#: answers the run's container names itself and forwards every other query (Ray's AAAA lookups
#: of the nodes' own names among them) to this upstream, which in the container's namespace is
#: its own loopback: the query fails at once, and no packet leaves for the host's resolver.
NO_UPSTREAM_DNS = ["127.0.0.1"]


#: The cloud metadata address. Ray's dashboard asks it which cloud it runs on whenever the
#: cluster was started by `ray start` (usage_lib.get_cluster_config_to_report, called even with
#: RAY_USAGE_STATS_ENABLED=0): refused at once on this machine, counted, and said, not a breach.
METADATA_ADDRESS = "169.254.169.254/32"


@dataclass(frozen=True)
class MetadataRule(CountedRule):
    """Refuse (TCP reset) what containers on ``bridge`` send to the cloud metadata address."""

    bridge: str
    comment: str

    def spec(self) -> list[str]:
        return [
            "DOCKER-USER",
            "-i",
            self.bridge,
            "-d",
            METADATA_ADDRESS,
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            self.comment,
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ]


class EgressLock:
    """A run network's :class:`EgressRule` (and :class:`MetadataRule` above it): noted before
    they are added, counted when removed."""

    def __init__(self, run_id: str, mode: str, progress: Callable[[str], None]) -> None:
        self.run_id = run_id
        self.mode = mode
        self.progress = progress
        self.rule: EgressRule | None = None
        self.metadata: MetadataRule | None = None
        self.hits = 0  # packets it dropped, summed over removals
        self.metadata_hits = 0

    @staticmethod
    def missing() -> list[str]:
        """Why this machine cannot add the rule ({NO_EGRESS.flag} was asked for)."""
        if iptables() is None or os.geteuid() != 0:
            return [
                f"{NO_EGRESS.flag} needs root and iptables (its rule keeps containers off the network)"
            ]
        return []

    def add(self, network_id: str) -> None:
        bridge = f"br-{network_id[:12]}"
        rule = EgressRule(bridge, run_name(self.run_id, self.mode, "egress"))
        runstate.note(self.run_id, self.mode, "iptables-rule", spec=rule.spec())
        rule.add()
        self.rule = rule
        metadata = MetadataRule(bridge, run_name(self.run_id, self.mode, "metadata"))
        runstate.note(self.run_id, self.mode, "iptables-rule", spec=metadata.spec())
        metadata.add()  # inserted first: checked before the drop
        self.metadata = metadata

    def _rules(self) -> list[CountedRule]:
        return [r for r in (self.metadata, self.rule) if r is not None]

    def remove(self) -> None:
        """Read the counters, then delete the rules; say so when anything tried to get out."""
        if self.metadata is not None:
            asked = self.metadata.hits()
            self.metadata_hits += asked
            self.metadata.remove()
            self.metadata = None
            if asked:
                self.progress(
                    f"Ray asked the cloud metadata address {METADATA_ADDRESS} {asked} time(s) "
                    "(its dashboard's cloud detection); refused on this machine"
                )
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

    def removal_command(self) -> str | None:
        """The shell command that deletes the rules (a kept cluster's removal), by their specs."""
        rules = self._rules()
        if not rules:
            return None
        return " && ".join(shlex.join([_iptables(), "-w", "5", "-D", *r.spec()]) for r in rules)

    def inventory(self) -> list[InventoryItem]:
        items = [
            InventoryItem("iptables-rule", shlex.join(rule.spec()), self.run_id)
            for rule in self._rules()
            if rule.present()
        ]
        if self.hits:
            # Not a leftover but a breach: reported where a clean run must show nothing.
            items.append(
                InventoryItem(
                    "blocked-connection",
                    f"{self.hits} packet(s)",
                    self.run_id,
                    "containers tried to reach past this machine",
                )
            )
        return items
