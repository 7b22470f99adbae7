"""``junit.xml`` as CI dashboards group it: suite ``ray-conformance``, with mode, Ray and run id.

pytest's junitxml plugin writes the file (its suite name defaults to ``pytest``); the results
writer then names the suite and adds the run's properties, and ``merge`` puts every bundle's
suites into one file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from reports.model import BundleError, Results, write_text_atomic

JUNIT_FILE = "junit.xml"
SUITE_NAME = "ray-conformance"
#: junitxml's default suite name (``junit_suite_name``): replaced, a name the user chose is kept.
PYTEST_DEFAULT = "pytest"


def run_properties(results: Results) -> list[tuple[str, str]]:
    """The properties that say which run a suite is: each mode that ran, the Ray, the run id."""
    props = [("mode", m) for m in results.mode_names()]
    if results.environment.get("ray"):
        props.append(("ray_version", str(results.environment["ray"])))
    props.append(("run_id", results.run_id))
    return props


def suites(path: Path) -> list[ET.Element]:
    """The ``<testsuite>`` elements of a JUnit file (a ``<testsuites>`` root or a single suite)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise BundleError(f"{path}: not readable JUnit XML ({exc})") from None
    return [root] if root.tag == "testsuite" else list(root.iter("testsuite"))


def label(suite: ET.Element, properties: Iterable[tuple[str, str]]) -> None:
    """Name ``suite`` ``ray-conformance`` (unless the user named it) and add what is missing."""
    if suite.get("name", PYTEST_DEFAULT) == PYTEST_DEFAULT:
        suite.set("name", SUITE_NAME)
    props = suite.find("properties")
    if props is None:
        props = ET.Element("properties")
        suite.insert(0, props)  # JUnit's schema wants <properties> first
    have = {(p.get("name"), p.get("value")) for p in props.iter("property")}
    for name, value in properties:
        if (name, value) not in have:
            ET.SubElement(props, "property", name=name, value=value)


def write(path: Path, testsuites: list[ET.Element]) -> None:
    root = ET.Element("testsuites", name=SUITE_NAME)
    root.extend(testsuites)
    text = ET.tostring(root, encoding="unicode", xml_declaration=True)
    write_text_atomic(path, text + "\n")


def relabel(path: Path, results: Results) -> None:
    """Rewrite the run's own ``junit.xml`` with the suite name and the run's properties."""
    found = suites(path)
    for suite in found:
        label(suite, run_properties(results))
    write(path, found)


def merged(out: Path, sources: list[tuple[Path, Results]]) -> bool:
    """One ``junit.xml`` at ``out`` with every source's suites; False when none had one."""
    collected: list[ET.Element] = []
    for bundle, results in sources:
        if (bundle / JUNIT_FILE).is_file():
            for suite in suites(bundle / JUNIT_FILE):
                label(suite, run_properties(results))
                collected.append(suite)
    if collected:
        write(out / JUNIT_FILE, collected)
    return bool(collected)
