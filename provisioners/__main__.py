"""``python -m provisioners <command>``: the provisioners' own commands.

python -m provisioners sweep [--dry-run] [--run-id ID] [--mode MODE] [--older-than AGE]
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: Subcommand -> module with ``main(argv) -> int``.
COMMANDS = {
    "sweep": "provisioners.sweep",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        known = ", ".join(COMMANDS)
        sys.stderr.write(
            f"usage: python -m provisioners {{{known}}} [options]"
            + (
                f"\nunknown command {args[0]!r}; known: {known}"
                if args and args[0] not in ("-h", "--help")
                else ""
            )
            + "\n"
        )
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    command: int = importlib.import_module(COMMANDS[args[0]]).main(args[1:])
    return command


if __name__ == "__main__":
    raise SystemExit(main())
