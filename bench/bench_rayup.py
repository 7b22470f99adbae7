"""Launcher-mode latencies beside Docker's, in one run.

    .venv/bin/python bench/bench_rayup.py [--nodes 3]

Prints, for the same node count (head + workers):
  * vm time-to-ready (``ray up`` over SSH until every node is alive) / docker time-to-ready;
  * autoscale scale-up (work queued -> all nodes alive) / docker time-to-ready;
  * autoscale scale-down (work done -> head alone) / docker teardown time.
Each mode is provisioned and torn down in turn, never side by side, so they don't compete
for the machine's two cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import save

from fixtures.offline import run_offline
from provisioners.contract.base import ClusterSpec, Provisioner
from provisioners.modes.autoscale import AutoscaleProvisioner
from provisioners.modes.vm import VmProvisioner
from provisioners.util.nodeimage import IMAGE_BUILD

SCALE = """
import json, time, ray
ray.init(logging_level="ERROR", log_to_driver=False)
alive = lambda: sum(1 for n in ray.nodes() if n["Alive"])
want = {nodes}

@ray.remote(num_cpus=1)
def hold(seconds):
    time.sleep(seconds)

t0 = time.monotonic()
refs = [hold.remote(20) for _ in range(want - 1)]
while alive() < want and time.monotonic() - t0 < 300:
    time.sleep(0.2)
up = time.monotonic() - t0
ray.get(refs)
t1 = time.monotonic()
while alive() > 1 and time.monotonic() - t1 < 300:
    time.sleep(0.2)
print("RESULT " + json.dumps({{"up": up, "down": time.monotonic() - t1}}))
"""


def timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def spec(mode: str, workdir: Path, workers: int) -> ClusterSpec:
    return ClusterSpec(
        mode=mode,
        run_id=f"bench{int(time.time()) % 100000}",
        workdir=workdir / mode,
        workers=workers,
        # The node image is built here (cached), never pulled: the bench must not reach a registry.
        options={IMAGE_BUILD.key: True},
        progress=lambda m: print(f"  [{mode}] {m}", flush=True),
    )


def ready_and_teardown(p: Provisioner, s: ClusterSpec) -> tuple[float, float]:
    try:
        ready = timed(lambda: p.provision(s))
    finally:
        down = timed(p.teardown)
    leftovers = p.inventory()
    if leftovers:
        print(f"  [{s.mode}] LEFT BEHIND: {[str(i) for i in leftovers]}")
    return ready, down


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="head + workers (default 3)")
    args = parser.parse_args()
    workers = args.nodes - 1
    workdir = Path(tempfile.mkdtemp(prefix="rc-bench-rayup-"))
    results: dict[str, float] = {}

    try:
        from provisioners.modes.docker import DockerProvisioner
    except ImportError as e:
        print(f"docker mode unavailable ({e}); ratios are omitted")
        docker_ready = docker_down = None
    else:
        docker_ready, docker_down = ready_and_teardown(
            DockerProvisioner(), spec("docker", workdir, workers)
        )
        results |= {"docker_ready_s": docker_ready, "docker_teardown_s": docker_down}

    vm_ready, vm_down = ready_and_teardown(VmProvisioner(), spec("vm", workdir, workers))
    results |= {"vm_ready_s": vm_ready, "vm_teardown_s": vm_down}

    auto = AutoscaleProvisioner()
    auto_spec = spec("autoscale", workdir, workers)
    try:
        results["autoscale_head_s"] = timed(lambda: auto.provision(auto_spec))
        out = auto.run_in_cluster(SCALE.format(nodes=args.nodes), timeout=900)
        scale = json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][7:])
        results |= {"autoscale_up_s": scale["up"], "autoscale_down_s": scale["down"]}
    finally:
        auto.teardown()

    print(f"\n{args.nodes} nodes (head + {workers}):")
    for key, value in results.items():
        print(f"  {key:<22} {value:7.1f} s")

    def ratio(name: str, value: float, base: float | None, base_name: str) -> None:
        text = f"{value / base:5.2f}x docker {base_name}" if base else "(no docker baseline)"
        print(f"  {name:<22} {value:7.1f} s  = {text}")

    print("ratios:")
    ratio("vm ready", vm_ready, docker_ready, "ready")
    ratio("autoscale up", results["autoscale_up_s"], docker_ready, "ready")
    ratio("autoscale down", results["autoscale_down_s"], docker_down, "teardown")
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {workdir / 'results.json'}")
    modes = {
        "vm": timing(vm_ready, vm_down, docker_ready, docker_down),
        "autoscale": {
            "provision_s": round(results["autoscale_head_s"], 1),
            "scale_up_s": round(results["autoscale_up_s"], 1),
            "scale_down_s": round(results["autoscale_down_s"], 1),
        },
    }
    if docker_ready is not None and docker_down is not None:
        modes["docker"] = timing(docker_ready, docker_down, None, None)
        modes["autoscale"] |= {
            "scale_up_vs_docker": round(results["autoscale_up_s"] / docker_ready, 2),
            "scale_down_vs_docker": round(results["autoscale_down_s"] / docker_down, 2),
        }
    save("bench_rayup", modes, nodes=args.nodes)
    return 0


def timing(
    ready: float, down: float, base_ready: float | None, base_down: float | None
) -> dict[str, Any]:
    """A mode's provision and teardown seconds, and their ratios to docker's when given."""
    out: dict[str, Any] = {"provision_s": round(ready, 1), "teardown_s": round(down, 1)}
    if base_ready and base_down:
        out |= {
            "provision_vs_docker": round(ready / base_ready, 2),
            "teardown_vs_docker": round(down / base_down, 2),
        }
    return out


if __name__ == "__main__":
    raise SystemExit(run_offline(main))
