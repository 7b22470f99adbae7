"""Wiring only. The ray-conformance plugin (``fixtures/plugin.py``) is a pytest plugin of its own,
registered by the ``pytest11`` entry point in ``pyproject.toml``, so it is not named here: a
second registration from this file would clash with it, and a conftest is not loaded at all
when pytest picks another rootdir.
"""
