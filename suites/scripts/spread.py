"""The node-spread counter: the book's localPython.py / servicePython.py, at a load you choose.

Remote tasks return where they ran and a collections.Counter tallies them. Run from outside
with a Ray Client address as the first argument, or inside the cluster with no argument
(``ray.init()`` then reads RAY_ADDRESS). Prints one ``RESULT {json}`` line.

Default scheduling packs small tasks onto the head, and SPREAD is uneven on a fresh cluster
(seen: 99/1/0 over three nodes), so proof that every node runs work comes from one task
pinned to each alive node per round. Then the load: SPREAD_TASKS tasks with the SPREAD
strategy, up to WINDOW of them in flight, tallied per node and timed from the first submission
to the last result (tasks/s). DEADLINE_S counts from the script's start, as the harness's time
limit does (a session's wait for its peers not counted): past it the script stops waiting and
the result says how far it got, and Ray's shutdown gets SHUTDOWN_S at most after that.

With a barrier directory and a session count after the address (``spread.py ADDRESS DIR N I``)
this is session I of N opened at once: it marks itself connected in DIR and runs the counter
only once all N are connected (waiting BARRIER_S at most), so the sessions are open side by
side, not one after another.
"""

import time

# Before `import ray` and `ray.init`, which take seconds on a busy machine: the deadline counts
# from here, so it always ends before the time limit the harness counts from the same start.
STARTED = time.monotonic()

import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import ray  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

ITERATIONS = 3
SPREAD_TASKS = 30
DEADLINE_S = 120
BARRIER_S = 60
TIMEOUT_S = 120
#: Seconds Ray's shutdown may take once the result is out (it waits on tasks still in flight).
SHUTDOWN_S = 5
#: Tasks in flight at most. Ray Client queues every submission before any later call, so with
#: no bound a large load would hold ray.wait back past the deadline; 2000 keep every CPU busy.
WINDOW = 2000


# num_cpus=0: a head with no CPUs (autoscaling clusters) must still run its pinned task.
@ray.remote(num_cpus=0)
def where() -> tuple:
    time.sleep(0.01)
    return (
        ray.get_runtime_context().get_node_id(),
        socket.gethostname(),
        ray.util.get_node_ip_address(),
    )


# Ray's default of one CPU per task: the load queues where CPUs are busy instead of starting
# a worker process per task (what num_cpus=0 tasks do under load).
@ray.remote
def load() -> str:
    return ray.get_runtime_context().get_node_id()


def wait_for_all_sessions(barrier: str, sessions: int, me: str) -> dict:
    """Mark this session connected; return once all are (at most BARRIER_S), with what it saw."""
    # A retried session (a known Ray Client flake) marks the same file again: counted once.
    open(os.path.join(barrier, f"connected-{me}"), "w").close()
    t0 = time.monotonic()
    while True:
        seen = len([n for n in os.listdir(barrier) if n.startswith("connected-")])
        if seen >= sessions or time.monotonic() - t0 > BARRIER_S:
            return {"sessions": sessions, "connected": seen, "waited_s": time.monotonic() - t0}
        time.sleep(0.1)


def spread_load(tasks: int, deadline: float) -> dict:
    """SPREAD tasks, WINDOW at most in flight, tallied per node; bounded by the deadline."""
    start = time.time()
    t0 = time.monotonic()
    tally = collections.Counter()
    pending = []
    submitted = 0
    while (submitted < tasks or pending) and time.monotonic() < deadline:
        while submitted < tasks and len(pending) < WINDOW:
            pending.append(load.options(scheduling_strategy="SPREAD").remote())
            submitted += 1
        ready, pending = ray.wait(
            pending,
            num_returns=min(len(pending), WINDOW // 2),
            timeout=max(0.0, deadline - time.monotonic()),
        )
        tally.update(ray.get(ready))
    seconds = time.monotonic() - t0
    done = sum(tally.values())
    return {
        "tasks": tasks,
        "submitted": submitted,
        "done": done,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(done / seconds, 1) if seconds > 0 else 0.0,
        "deadline_s": DEADLINE_S,
        "start": start,  # wall clock: concurrent sessions' loads are put on one time line
        "end": start + seconds,
        "tally": dict(tally),
    }


def node(n: dict) -> dict:
    return {
        "node_id": n["NodeID"],
        "hostname": n["NodeManagerHostname"],
        "ip": n["NodeManagerAddress"],
        # Ray gives its head this resource; the report marks that node.
        "head": "node:__internal_head__" in n.get("Resources", {}),
    }


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else None
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    barrier = None
    if len(sys.argv) > 4:
        barrier = wait_for_all_sessions(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    deadline = STARTED + DEADLINE_S + (barrier["waited_s"] if barrier else 0.0)
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
    loaded = spread_load(SPREAD_TASKS, deadline)
    # An autoscaling cluster may add nodes for the load: the cluster lists them too.
    started = {n["NodeID"] for n in alive}
    joined = [
        n for n in ray.nodes() if n["NodeID"] in loaded["tally"] and n["NodeID"] not in started
    ]
    result = {
        "alive": [node(n) for n in alive],
        "joined": [node(n) for n in joined],
        "pinned": dict(pinned),
        "where": where_seen,
        "misplaced": misplaced,
        "spread": loaded.pop("tally"),
        "load": loaded,
        "iterations": ITERATIONS,
        "barrier": barrier,
    }
    print("RESULT " + json.dumps(result), flush=True)
    closing = threading.Thread(target=ray.shutdown, daemon=True)
    closing.start()
    closing.join(SHUTDOWN_S)
    if closing.is_alive():
        # The result is out; Ray's atexit hook would wait for the same shutdown again.
        os._exit(0)


main()
