"""Docker mode overhead: DockerProvisioner.provision against a plain docker-CLI script.

Both start the same three containers (head + 2 workers, same image, shm, object store and
published ports) and stop the clock when the dashboard lists three alive nodes. Prints both
times, their ratio (target <= 1.10) and the peak memory of each node (cgroup's max usage, as
``docker stats`` reads it). Removes exactly the containers and networks it created, by id.

Usage: .venv/bin/python bench/bench_docker.py [--rounds N]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import MIB, save

from fixtures.offline import run_offline
from provisioners.contract.base import DEFAULT_WORKERS, RUN_ID_LABEL, ClusterSpec, Timeouts
from provisioners.modes.docker import DockerProvisioner
from provisioners.sources.docker import OBJECT_STORE_SHARE_OF_SHM, SHM_SHARE, SHM_SIZE
from provisioners.util.containers import docker_client
from provisioners.util.naming import run_name
from provisioners.util.nodeimage import IMAGE, ensure_node_image
from provisioners.util.relay import free_port
from provisioners.util.runner import run, run_full
from provisioners.util.waits import wait_for_nodes

TARGET_RATIO = 1.10
NODE_TIMEOUT_S = 180.0


def docker(*args: str) -> str:
    return run(["docker", *args], 120).strip()


def plain_cli(image: str, run_id: str, shm: int) -> tuple[float, list[str], str]:
    """The baseline: what a person would type. Returns (seconds, container ids, network id)."""
    label = f"{RUN_ID_LABEL}={run_id}"
    store = f"--object-store-memory={int(shm * OBJECT_STORE_SHARE_OF_SHM)}"
    common = ["--label", label, "--shm-size", str(shm), "-e", "RAY_USAGE_STATS_ENABLED=0"]
    ids: list[str] = []
    t0 = time.monotonic()
    net = docker("network", "create", "--label", label, run_name(run_id, "net"))
    try:
        dash = free_port()
        head = run_name(run_id, "head")
        ids.append(
            docker(
                "run",
                "-d",
                *common,
                "--name",
                head,
                "--hostname",
                head,
                "--network",
                net,
                "-p",
                f"127.0.0.1:{free_port()}:10001",
                "-p",
                f"127.0.0.1:{dash}:8265",
                image,
                "ray",
                "start",
                "--head",
                "--block",
                "--port=6379",
                "--dashboard-host=0.0.0.0",
                "--ray-client-server-port=10001",
                "--num-cpus=1",
                store,
            )
        )
        for i in range(1, DEFAULT_WORKERS + 1):
            name = run_name(run_id, "worker", str(i))
            ids.append(
                docker(
                    "run",
                    "-d",
                    *common,
                    "--name",
                    name,
                    "--hostname",
                    name,
                    "--network",
                    net,
                    image,
                    "ray",
                    "start",
                    "--block",
                    f"--address={head}:6379",
                    "--num-cpus=1",
                    store,
                )
            )
        wait_for_nodes(
            f"http://127.0.0.1:{dash}", 1 + DEFAULT_WORKERS, timeout=NODE_TIMEOUT_S, view="summary"
        )
    except BaseException:
        remove(ids, net)
        raise
    return time.monotonic() - t0, ids, net


def remove(ids: list[str], net: str) -> None:
    if ids:
        run_full(["docker", "rm", "-f", *ids], 120, check=False)
    if net:
        run_full(["docker", "network", "rm", net], 60, check=False)


def peak_memory(names: list[str]) -> dict[str, int]:
    """Peak memory per container: cgroup v1's max_usage, else the current usage."""
    client = docker_client(timeout=60)
    out = {}
    try:
        for name in names:
            stats: dict[str, Any] = client.api.stats(name, stream=False)
            mem = stats.get("memory_stats") or {}
            out[name] = int(mem.get("max_usage") or mem.get("usage") or 0)
    finally:
        client.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="Alternating rounds of each")
    args = parser.parse_args()

    t0 = time.monotonic()
    # Built here (cached), never pulled: the bench must not reach a registry.
    image = ensure_node_image(lambda m: print(f"  image: {m}"), 900, force_build=True)
    print(f"image {image} ready in {time.monotonic() - t0:.1f} s (not timed)")
    client = docker_client()
    shm = int(int(client.info()["MemTotal"]) * SHM_SHARE / (1 + DEFAULT_WORKERS))
    client.close()

    plain_times: list[float] = []
    prov_times: list[float] = []
    peaks: dict[str, int] = {}
    for _ in range(args.rounds):
        run_id = f"bench-{uuid.uuid4().hex[:6]}"
        seconds, ids, net = plain_cli(image, run_id, shm)
        remove(ids, net)
        plain_times.append(seconds)
        print(f"plain docker CLI: 3 alive nodes in {seconds:.1f} s")

        run_id = f"bench-{uuid.uuid4().hex[:6]}"
        spec = ClusterSpec(
            mode="docker",
            run_id=run_id,
            workdir=Path("/tmp") / run_id,
            workers=DEFAULT_WORKERS,
            timeouts=Timeouts(node_join=NODE_TIMEOUT_S),
            options={IMAGE.key: image, SHM_SIZE.key: shm},
        )
        provisioner = DockerProvisioner()
        try:
            start = time.monotonic()
            provisioner.provision(spec)
            seconds = time.monotonic() - start
            prov_times.append(seconds)
            print(f"DockerProvisioner.provision: 3 alive nodes in {seconds:.1f} s")
            peaks = peak_memory(provisioner.node_names())
        finally:
            provisioner.teardown()
        leftovers = provisioner.inventory()
        if leftovers:
            print(f"LEFT BEHIND: {[str(i) for i in leftovers]}")
            return 1

    plain, prov = min(plain_times), min(prov_times)
    ratio = prov / plain
    verdict = "ok" if ratio <= TARGET_RATIO else f"over the {TARGET_RATIO} target"
    print(f"ratio provisioner/plain = {prov:.1f} / {plain:.1f} = {ratio:.2f} ({verdict})")
    for name, peak in peaks.items():
        print(f"peak memory {name}: {peak / 1024**2:.0f} MiB")
    print(f"peak memory, three nodes together: {sum(peaks.values()) / 1024**2:.0f} MiB")
    what = "DockerProvisioner.provision vs the same containers by docker CLI, to 3 alive nodes"
    docker = {
        "overhead": round(ratio, 3),
        "overhead_harness_s": round(prov, 1),
        "overhead_raw_s": round(plain, 1),
        "overhead_what": what,
        "node_peak_provisioned_mib": {n: round(b / MIB) for n, b in peaks.items()},
    }
    save("bench_docker", {"docker": docker})
    return 0


if __name__ == "__main__":
    sys.exit(run_offline(main))
