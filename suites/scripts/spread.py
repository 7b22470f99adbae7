"""The node-spread counter: the book's localPython.py / servicePython.py.

Remote tasks return where they ran and a collections.Counter tallies them. Run from outside
with a Ray Client address as the first argument, or inside the cluster with no argument
(``ray.init()`` then reads RAY_ADDRESS). Prints one ``RESULT {json}`` line.

Default scheduling packs small tasks onto the head, and SPREAD is uneven on a fresh cluster
(seen: 99/1/0 over three nodes), so proof that every node runs work comes from one task
pinned to each alive node per round; the SPREAD tally is only recorded.
"""

import collections
import json
import socket
import sys
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ITERATIONS = 3
SPREAD_TASKS = 30
TIMEOUT_S = 120


# num_cpus=0: a head with no CPUs (autoscaling clusters) must still run its pinned task.
@ray.remote(num_cpus=0)
def where() -> tuple:
    time.sleep(0.01)
    return (
        ray.get_runtime_context().get_node_id(),
        socket.gethostname(),
        ray.util.get_node_ip_address(),
    )


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else None
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    alive = [n for n in ray.nodes() if n["Alive"]]
    pinned: collections.Counter = collections.Counter()
    where_seen = {}
    misplaced = []
    for _ in range(ITERATIONS):
        refs = {
            n["NodeID"]: where.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
            ).remote()
            for n in alive
        }
        for target, ref in refs.items():
            node_id, host, ip = ray.get(ref, timeout=TIMEOUT_S)
            pinned[node_id] += 1
            where_seen[node_id] = [host, ip]
            if node_id != target:
                misplaced.append([target, node_id])
    spread = collections.Counter(
        r[0]
        for r in ray.get(
            [where.options(scheduling_strategy="SPREAD").remote() for _ in range(SPREAD_TASKS)],
            timeout=TIMEOUT_S,
        )
    )
    result = {
        "alive": [
            {
                "node_id": n["NodeID"],
                "hostname": n["NodeManagerHostname"],
                "ip": n["NodeManagerAddress"],
                # Ray gives its head this resource; the report marks that node.
                "head": "node:__internal_head__" in n.get("Resources", {}),
            }
            for n in alive
        ],
        "pinned": dict(pinned),
        "where": where_seen,
        "misplaced": misplaced,
        "spread": dict(spread),
        "iterations": ITERATIONS,
    }
    print("RESULT " + json.dumps(result), flush=True)
    ray.shutdown()


main()
