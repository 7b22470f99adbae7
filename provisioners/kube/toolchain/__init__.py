"""Offline Kubernetes toolchain for kind: binaries and images built from modules and Debian."""

from provisioners.kube.toolchain.build import (
    KubeToolchain,
    ToolchainUnavailable,
    ensure_toolchain,
    kind_config,
)

__all__ = ["KubeToolchain", "ToolchainUnavailable", "ensure_toolchain", "kind_config"]
