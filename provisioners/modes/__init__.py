"""The built-in modes, one module each: a node source, a Ray deployer and, where a platform has
them, its rules, composed in a few lines and registered by one entry point (pyproject.toml),
exactly as a vendor's mode is.
"""
