"""What Ray Client does across versions, tried for real: ``client_across.py ADDRESS [ignore]``.

Opens a session and runs one task; with ``ignore``, first sets RAY_IGNORE_VERSION_MISMATCH
(Ray's documented override of its version check). Prints one ``RESULT {json}`` line: whether
it connected, whether the task ran, and the error Ray raised at the step that failed (in one
short line); exits 1 when a step failed, with the whole error on stderr, so the harness sees a
known Ray Client flake's signature however deep in the server's traceback it is, and retries it
(a refusal is not one).
"""

import json
import os
import sys
import traceback

import ray

if len(sys.argv) > 2 and sys.argv[2] == "ignore":
    os.environ["RAY_IGNORE_VERSION_MISMATCH"] = "1"  # read when the session connects


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:400]


result = {"connected": False, "task": False, "error": ""}
try:
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    result["connected"] = True
    result["task"] = ray.get(ray.remote(lambda: True).remote(), timeout=60)
except Exception as exc:
    result["error"] = one_line(exc)
    traceback.print_exc()  # the server's traceback inside it names the flake, past one_line's cut
print("RESULT " + json.dumps(result), flush=True)
sys.exit(0 if result["task"] else 1)
