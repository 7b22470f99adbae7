"""kind-operator's phases beside the docker mode's time to a cluster of the same size, in one run.

    .venv/bin/python bench/bench_kind.py [--nodes 3] [--cold]

Prints, for head + workers: the offline toolchain call (cached; with ``--cold`` also a full
rebuild into a scratch cache, ~15 min), kind cluster ready, operator ready, RayCluster ready
and teardown, each as a ratio to docker's time-to-ready (teardown: to docker's teardown).
Phases are read from the mode's own progress lines. Modes run in turn, never side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rayup import ready_and_teardown, spec, timed, timing
from figures import save

from fixtures.offline import run_offline
from provisioners.contract.base import ClusterSpec
from provisioners.kube.toolchain import ensure_toolchain
from provisioners.modes.docker import DockerProvisioner
from provisioners.modes.kind_operator import KindOperatorProvisioner

PHASES = {
    "kind_cluster_ready_s": re.compile(r"kind cluster \S+ ready in ([\d.]+) s"),
    "operator_ready_s": re.compile(r"KubeRay \S+ ready in ([\d.]+) s"),
    "raycluster_ready_s": re.compile(r"RayCluster \S+ ready in ([\d.]+) s"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="head + workers (default 3)")
    parser.add_argument("--cold", action="store_true", help="also time a cold toolchain build")
    args = parser.parse_args()
    workers = args.nodes - 1
    workdir = Path(tempfile.mkdtemp(prefix="rc-bench-kind-"))
    results: dict[str, float] = {}

    if args.cold:
        # A scratch cache: the machine's own stays as it is (Go's module cache is shared).
        os.environ["XDG_CACHE_HOME"] = str(workdir / "cold-cache")
        results["toolchain_cold_s"] = timed(lambda: ensure_toolchain(print, 3600))
        del os.environ["XDG_CACHE_HOME"]
    results["toolchain_cached_s"] = timed(lambda: ensure_toolchain(lambda _m: None, 3600))

    docker_ready, docker_down = ready_and_teardown(
        DockerProvisioner(), spec("docker", workdir, workers)
    )
    lines: list[str] = []
    base = spec("kind-operator", workdir, workers)

    def progress(message: str) -> None:
        lines.append(message)
        base.progress(message)

    kind_spec = ClusterSpec(
        mode=base.mode,
        run_id=base.run_id,
        workdir=base.workdir,
        workers=workers,
        options=base.options,
        progress=progress,
    )
    kind_ready, kind_down = ready_and_teardown(KindOperatorProvisioner(), kind_spec)
    for key, pattern in PHASES.items():
        found = [float(m[1]) for line in lines if (m := pattern.search(line))]
        if found:
            results[key] = found[-1]
    results |= {
        "docker_ready_s": docker_ready,
        "docker_teardown_s": docker_down,
        "kind_operator_ready_s": kind_ready,
        "kind_operator_teardown_s": kind_down,
    }

    print(f"\n{args.nodes} nodes (head + {workers}):")
    for key, value in results.items():
        base_s = docker_down if "teardown" in key else docker_ready
        which = "teardown" if "teardown" in key else "ready"
        print(f"  {key:<26} {value:7.1f} s = {value / base_s:5.2f}x docker {which}")
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {workdir / 'results.json'}")
    kind = timing(kind_ready, kind_down, docker_ready, docker_down)
    kind["phases_s"] = {k: round(results[k], 1) for k in PHASES if k in results}
    modes = {"docker": timing(docker_ready, docker_down, None, None), "kind-operator": kind}
    save("bench_kind", modes, nodes=args.nodes)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_offline(main))
