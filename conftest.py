"""Wiring only: the ray-conformance plugin (options, markers, fixtures, reports)."""

pytest_plugins = ["fixtures.plugin"]
