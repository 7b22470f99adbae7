"""Kubernetes modes: cluster providers (kind, existing), the KubeRay deployer, the offline toolchain."""
