"""Deployment modes: the Provisioner contract, its registry, and one module per mode."""
