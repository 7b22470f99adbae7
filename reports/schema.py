"""The published JSON Schemas (``reports/schemas/``) of the files a vendor writes or reads.

``target.schema.json`` is the product file (``target.yaml``), ``results.schema.json`` the
results document (``results.json``). The code that reads them validates against these same
files, so the published contract and the one enforced cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError, best_match  # type: ignore[import-untyped]

SCHEMA_DIR = Path(__file__).parent / "schemas"
TARGET = "target.schema.json"
RESULTS = "results.schema.json"


@functools.cache
def document(name: str) -> dict[str, Any]:
    """The published schema itself, parsed."""
    found: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return found


@functools.cache
def validator(name: str) -> Any:
    schema = document(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors(name: str, data: Any) -> list[ValidationError]:
    """Every way ``data`` breaks the schema, in document order."""
    return sorted(validator(name).iter_errors(data), key=lambda e: [str(p) for p in e.path])


def first_error(name: str, data: Any) -> str:
    """The most telling problem as one line (``$.results[3].outcome: 'maybe' is not one of ...``), or ""."""
    found = best_match(validator(name).iter_errors(data))
    if found is None:
        return ""
    return f"{found.json_path}: {found.message}"
