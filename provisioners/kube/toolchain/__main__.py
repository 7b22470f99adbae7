"""``python -m provisioners.kube.toolchain [TIMEOUT_S]``: build or warm the toolchain, print it."""

from __future__ import annotations

import sys
from dataclasses import asdict

from provisioners.kube.toolchain.build import ToolchainUnavailable, ensure_toolchain


def main(argv: list[str]) -> int:
    timeout = float(argv[1]) if len(argv) > 1 else 3600.0

    def progress(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    try:
        toolchain = ensure_toolchain(progress, timeout)
    except ToolchainUnavailable as exc:
        sys.stderr.write(f"kube toolchain unavailable: {exc}\n")
        return 1
    for field, value in asdict(toolchain).items():
        shown = ":".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        sys.stdout.write(f"{field}={shown}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
