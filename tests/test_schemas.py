"""The published JSON Schemas: valid, linked from CERTIFY.md, and the rules the readers apply."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest

from reports.bundle import main
from reports.certify import TARGET_FIELDS, TargetError, load_target
from reports.schema import RESULTS, SCHEMA_DIR, TARGET, errors

REPO = Path(__file__).resolve().parents[1]
GOOD_TARGET = {
    "vendor": "Example Corp",
    "name": "Example Ray Service",
    "version": 1.2,  # YAML reads an unquoted 1.2 as a number: taken as its text
    "website_url": "https://example.invalid/ray",
    "documentation_url": "https://example.invalid/ray/docs",
    "type": "hosted platform",
    "description": "Ray clusters on Example Corp's machines.",
    "contact_email_address": "ray-team@example.invalid",
    "mode": "fake",
    "ray_version": "2.60.0",
    "kuberay_version": "none",
    "platform_version": "example 7",
}


@pytest.mark.parametrize("name", [TARGET, RESULTS])
def test_each_schema_is_valid_and_linked_from_certify_md(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert f"reports/schemas/{name}" in (REPO / "CERTIFY.md").read_text()


def test_the_target_schema_requires_exactly_the_fields_the_reader_returns() -> None:
    schema = json.loads((SCHEMA_DIR / TARGET).read_text())
    assert tuple(schema["required"]) == TARGET_FIELDS
    assert list(schema["properties"]) == list(TARGET_FIELDS)
    assert errors(TARGET, GOOD_TARGET) == []


def test_a_target_names_every_wrong_field_at_once(tmp_path: Path) -> None:
    path = tmp_path / "target.yaml"
    fields = {
        **GOOD_TARGET,
        "vendor": "  ",
        "name": ["a", "b"],
        "website_url": "example.invalid/ray",
        "type": "cloud",
        "colour": "blue",
    }
    del fields["contact_email_address"]
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in fields.items()))
    with pytest.raises(TargetError) as caught:
        load_target(path)
    assert str(caught.value) == (
        f"{path}: fields 'vendor', 'contact_email_address' are missing or empty; "
        "field 'name' must be a string, not list; "
        "field 'type' must be one of distribution, hosted platform, installer, not 'cloud'; "
        "field 'website_url' must be an http:// or https:// URL, not 'example.invalid/ray'; "
        "unknown field 'colour' (known: " + ", ".join(TARGET_FIELDS) + ")"
    )


def test_a_target_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "target.yaml"
    path.write_bytes(b"vendor: \xff\xfe\n")
    with pytest.raises(TargetError, match=r"target.yaml: not UTF-8 text \(byte 0xff at offset 8\)"):
        load_target(path)


def test_a_results_document_off_the_schema_is_refused_naming_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    doc = {
        "schema": "ray-conformance/results/v1",
        "run_id": "r",
        "started": "s",
        "finished": "f",
        "exit_status": 0,
        "modes": [{"mode": "local", "status": "torn-down"}],
        "results": [
            {"check": "c", "mode": "local", "outcome": "maybe", "duration_s": 1, "nodeid": "n"}
        ],
    }
    (bundle / "results.json").write_text(json.dumps(doc))
    assert main(["show", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {bundle}/results.json: does not match the results schema: "
        "$.results[0].outcome: 'maybe' is not one of "
        "['error', 'failed', 'skipped', 'xfailed', 'passed']\n"
    )


def test_the_results_schema_names_every_status_a_mode_record_can_have() -> None:
    from reports.model import MODE_STATUSES

    status = json.loads((SCHEMA_DIR / RESULTS).read_text())
    text = json.dumps(status)
    described = re.search(r'"description": "([^"]*provision-failed[^"]*)"', text)
    assert described is not None
    named = set(re.findall(r"[a-z]+(?:-[a-z]+)*", described.group(1).split("(")[0])) - {"or"}
    assert named == set(MODE_STATUSES)
