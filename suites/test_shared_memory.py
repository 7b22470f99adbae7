"""Shared memory: each node's /dev/shm has the size asked for, and Ray's object store lives in it.

A container gets 64 MiB of /dev/shm unless it is run with ``--shm-size``; Ray then silently puts
its object store on disk (/tmp), which works but is slow. The object store's place and size are
read from the raylet's own command line (``--plasma_directory``, ``--object_store_memory``), so
the check sees what Ray chose, not what the harness hoped.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from provisioners.contract.base import (
    ClusterHandle,
    ClusterSpec,
    Provisioner,
    SupportsNodeExec,
    SupportsSharedMemory,
)

#: tmpfs rounds its size up to whole pages; allow that much (and a little more) of difference.
SIZE_SLACK_BYTES = 1024 * 1024
#: One process per block: its arguments one per line, then a separator line.
_LIST_PROCESSES = (
    "for p in /proc/[0-9]*; do tr '\\000' '\\n' < \"$p/cmdline\" 2>/dev/null; echo '--proc--'; done"
)


@dataclass(frozen=True)
class Raylet:
    plasma_directory: str
    object_store_memory: int


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


def _abilities(provisioner: Provisioner) -> tuple[SupportsNodeExec, SupportsSharedMemory]:
    if not isinstance(provisioner, SupportsNodeExec):
        pytest.skip("this mode cannot run commands on its nodes")
    if not isinstance(provisioner, SupportsSharedMemory):
        pytest.skip("this mode does not size its nodes' shared memory")
    return provisioner, provisioner


def shm_bytes(nodes: SupportsNodeExec, node: str, timeout: float) -> int:
    """Size of the node's /dev/shm, from ``df`` (POSIX output, 1-byte blocks)."""
    out = nodes.node_exec(node, ["df", "-P", "-B1", "/dev/shm"], timeout)
    lines = [line for line in out.splitlines() if line.strip()]
    try:
        return int(lines[-1].split()[1])
    except (IndexError, ValueError):
        raise AssertionError(f"node {node}: cannot read `df /dev/shm` output:\n{out}") from None


def raylets(nodes: SupportsNodeExec, node: str, timeout: float) -> list[Raylet]:
    """Every raylet on the node, with where and how big its object store is."""
    out = nodes.node_exec(node, ["sh", "-c", _LIST_PROCESSES], timeout)
    found = []
    for block in out.split("--proc--"):
        args = [a for a in block.strip().split("\n") if a]
        if not args or args[0].rsplit("/", 1)[-1] != "raylet":
            continue
        flags = dict(a[2:].split("=", 1) for a in args[1:] if a.startswith("--") and "=" in a)
        found.append(
            Raylet(
                plasma_directory=flags.get("plasma_directory", "?"),
                object_store_memory=int(flags.get("object_store_memory", "0")),
            )
        )
    assert found, f"node {node}: no raylet process found (is Ray running there?)"
    return found


def test_shm_size_matches_request(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> None:
    """Each node's /dev/shm has the size asked for."""
    nodes, shm = _abilities(ray_provisioner)
    asked = shm.shm_bytes_per_node()
    wrong = []
    for node in nodes.node_names():
        size = shm_bytes(nodes, node, ray_spec.timeouts.preflight)
        if abs(size - asked) > SIZE_SLACK_BYTES:
            wrong.append(f"{node}: /dev/shm is {size} bytes ({_mib(size)})")
    assert not wrong, (
        f"/dev/shm differs from the {asked} bytes ({_mib(asked)}) asked for on "
        f"{len(wrong)} node(s): " + "; ".join(wrong)
    )


def test_object_store_lives_in_shm_and_fits(
    ray_provisioner: Provisioner, ray_cluster: ClusterHandle, ray_spec: ClusterSpec
) -> None:
    """Ray's object store lives in /dev/shm and fits in it."""
    nodes, shm = _abilities(ray_provisioner)
    problems = []
    for node in nodes.node_names():
        size = shm_bytes(nodes, node, ray_spec.timeouts.preflight)
        for raylet in raylets(nodes, node, ray_spec.timeouts.preflight):
            store = raylet.object_store_memory
            if not raylet.plasma_directory.startswith("/dev/shm"):
                problems.append(
                    f"{node}: Ray put its object store ({_mib(store)}) in "
                    f"{raylet.plasma_directory}, not /dev/shm, because /dev/shm is only "
                    f"{_mib(size)}"
                )
            elif store > size:
                problems.append(
                    f"{node}: the object store ({_mib(store)}) does not fit in /dev/shm "
                    f"({_mib(size)})"
                )
    # The mode knows its own knob (Docker's --shm-size, a pod's emptyDir medium: Memory, ...).
    assert not problems, (
        "; ".join(problems) + f". To give each node more shared memory, {shm.shm_advice()}."
    )
