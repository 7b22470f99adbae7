"""``ray-conformance <command> [args]``: the project's commands that are not pytest runs.

The suites themselves run with ``pytest``; everything else is one of these. Each is also
``python -m <module> ...``; this only dispatches:

- ``reports verify|merge|show|summary|compare ...``: result bundles (``python -m reports``)
- ``toolchain [TIMEOUT_S]``: build or warm the offline kind toolchain
  (``python -m provisioners.kube.toolchain``)
- anything else: ``python -m provisioners <command>`` (``options``, ``modes``, ...)
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "reports":
        from reports.bundle import main as reports

        return reports(rest)
    if command == "toolchain":
        from provisioners.kube.toolchain.__main__ import main as toolchain

        return toolchain(["ray-conformance toolchain", *rest])
    from provisioners.__main__ import COMMANDS
    from provisioners.__main__ import main as provisioners

    if command in ("", "-h", "--help"):
        sys.stdout.write(
            "usage: ray-conformance {reports,toolchain,"
            + ",".join(COMMANDS)
            + "} ...\n(the suites run with pytest; see README.md)\n"
        )
        return 0 if command else 2
    return provisioners(args)
