"""The vendor contract: the Protocols and abilities, the spec and handle, options, the registry and
the static conformance check.

A vendor's mode imports only this package; it imports nothing else of the project (import-linter
enforces it).
"""
