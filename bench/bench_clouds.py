"""The cloud rehearsals' time to ready and teardown as a ratio to the ``vm`` mode's, in one run.

    .venv/bin/python bench/bench_clouds.py [--nodes 3] [--rounds 1] [--clouds aws,ibm]

All are ``ray up`` over SSH onto containers of the same node image, for the same node count
(head + workers): ``vm`` onto containers it starts itself, each rehearsal onto containers that
back the instances its cloud's stand-in launches (workers launched by the head's autoscaler).
The difference is the cloud: for ``aws`` moto's API and Ray's IAM setup (two hard-coded 15 s
sleeps when the role and instance profile are new: every rehearsal, since each has its own
moto); for ``ibm`` the VPC stand-in, the connector's floating IP and its fixed 5 s sleep after
each create. Modes run one after the other, never side by side (two cores). The first round
includes a rehearsal image build when it is not cached (cold); later rounds are warm.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rayup import ready_and_teardown
from figures import save

from fixtures.offline import run_offline
from provisioners.contract.base import ClusterSpec, Provisioner
from provisioners.modes.aws import AwsProvisioner
from provisioners.modes.ibm import IbmProvisioner
from provisioners.modes.vm import VmProvisioner
from provisioners.sources import aws, ibm
from provisioners.util.nodeimage import IMAGE_BUILD

CLOUDS: dict[str, tuple[type[Provisioner], dict[str, object]]] = {
    "aws": (AwsProvisioner, {aws.REHEARSAL.key: True}),
    "ibm": (IbmProvisioner, {ibm.REHEARSAL.key: True, ibm.COMPAT.key: True}),
}


def spec(mode: str, workdir: Path, workers: int, **options: object) -> ClusterSpec:
    return ClusterSpec(
        mode=mode,
        run_id=f"bench{time.time_ns() % 10**8}",
        workdir=workdir / mode,
        workers=workers,
        options={IMAGE_BUILD.key: True, **options},  # the node image built here, never pulled
        progress=lambda m: print(f"  [{mode}] {m}", flush=True),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="head + workers (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every mode (default 1)")
    parser.add_argument("--clouds", default="aws,ibm", help="which rehearsals (default aws,ibm)")
    args = parser.parse_args()
    clouds = [c for c in args.clouds.split(",") if c]
    unknown = sorted(set(clouds) - set(CLOUDS))
    if unknown:
        parser.error(f"unknown cloud(s) {', '.join(unknown)}; known: {', '.join(CLOUDS)}")
    workers = args.nodes - 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="rc-bench-clouds-") as tmp:
        for round_ in range(1, args.rounds + 1):
            workdir = Path(tmp) / str(round_)
            vm = ready_and_teardown(VmProvisioner(), spec("vm", workdir, workers))
            for cloud in clouds:
                factory, options = CLOUDS[cloud]
                rows.append(
                    (
                        round_,
                        cloud,
                        vm,
                        ready_and_teardown(factory(), spec(cloud, workdir, workers, **options)),
                    )
                )
    print(f"\n{args.nodes} nodes (head + {workers}):")
    print(
        f"  {'round':<6}{'cloud':<6}{'vm ready':>10}{'ready':>9}{'ratio':>7}"
        f"{'vm down':>10}{'down':>9}{'ratio':>7}"
    )
    for round_, cloud, (vm_up, vm_down), (up, down) in rows:
        print(
            f"  {round_:<6}{cloud:<6}{vm_up:>9.1f}s{up:>8.1f}s{up / vm_up:>6.2f}x"
            f"{vm_down:>9.1f}s{down:>8.1f}s{down / vm_down:>6.2f}x"
        )
    # The last round's figures: the first may include a rehearsal image build (cold).
    modes = {
        cloud: {
            "provision_s": round(up, 1),
            "teardown_s": round(down, 1),
            "provision_vs_vm": round(up / vm_up, 2),
            "teardown_vs_vm": round(down / vm_down, 2),
        }
        for _, cloud, (vm_up, vm_down), (up, down) in rows
    }
    save("bench_clouds", modes, nodes=args.nodes)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_offline(main))
