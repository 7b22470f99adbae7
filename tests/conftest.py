"""Tests of the harness itself: pytester runs with fake provisioners, no real cluster needed."""

pytest_plugins = ["pytester"]
