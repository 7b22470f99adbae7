"""The AWS rehearsal's time to ready and teardown as a ratio to the ``vm`` mode's, in one run.

    .venv/bin/python bench/bench_aws.py [--nodes 3] [--rounds 1]

Both are ``ray up`` over SSH onto containers of the same node image, for the same node count
(head + workers): ``vm`` onto containers it starts itself, the rehearsal onto containers that
back the instances moto launches (workers launched by the head's autoscaler). The difference is
the cloud: moto's API, Ray's IAM setup (two hard-coded 15 s sleeps when the role and instance
profile are new: every rehearsal, since each has its own moto), instance launch and
termination. Modes run one after the other, never side by side (two cores). The first round
includes the rehearsal image build when it is not cached (cold); later rounds are warm.
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

from provisioners.aws import REHEARSAL, AwsProvisioner
from provisioners.base import ClusterSpec
from provisioners.vm import VmProvisioner


def spec(mode: str, workdir: Path, workers: int, **options: object) -> ClusterSpec:
    return ClusterSpec(
        mode=mode,
        run_id=f"bench{time.time_ns() % 10**8}",
        workdir=workdir / mode,
        workers=workers,
        options=options,
        progress=lambda m: print(f"  [{mode}] {m}", flush=True),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="head + workers (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both modes (default 1)")
    args = parser.parse_args()
    workers = args.nodes - 1
    workdir = Path(tempfile.mkdtemp(prefix="rc-bench-aws-"))
    rows = []
    for round_ in range(1, args.rounds + 1):
        vm = ready_and_teardown(VmProvisioner(), spec("vm", workdir / str(round_), workers))
        aws = ready_and_teardown(
            AwsProvisioner(), spec("aws", workdir / str(round_), workers, **{REHEARSAL.key: True})
        )
        rows.append((round_, vm, aws))
    print(f"\n{args.nodes} nodes (head + {workers}):")
    print(f"  {'round':<6}{'vm ready':>10}{'aws ready':>11}{'ratio':>7}"
          f"{'vm down':>10}{'aws down':>10}{'ratio':>7}")  # fmt: skip
    for round_, (vm_up, vm_down), (aws_up, aws_down) in rows:
        print(
            f"  {round_:<6}{vm_up:>9.1f}s{aws_up:>10.1f}s{aws_up / vm_up:>6.2f}x"
            f"{vm_down:>9.1f}s{aws_down:>9.1f}s{aws_down / vm_down:>6.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
