"""Wiring only. The ray-conformance plugin (``fixtures/plugin.py``) is a pytest plugin of its own,
registered by the ``pytest11`` entry point in ``pyproject.toml``, so it is not named here: the
entry point loads it wherever pytest runs, and a conftest is not loaded at all when pytest picks
another rootdir.
"""
