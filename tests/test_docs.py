"""README.md, CERTIFY.md and docs/ say what the code does: their examples run, their flags exist.

The README's options table is generated (``python -m provisioners options --markdown``); every
example marked ``<!-- example: offline -->`` (one that needs no cluster) runs here as written,
with ``.venv/bin/`` meaning this interpreter's bin directory (tox's env in CI).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from fixtures.options import HARNESS
from provisioners.commands.options import markdown, mode_options
from reports.certify import load_target

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "CERTIFY.md", *sorted((REPO / "docs").glob("*.md"))]
MARK = "<!-- example: offline -->"
EXAMPLE = re.compile(re.escape(MARK) + r"\n```(\w+)\n(.*?)```", re.S)
#: A vendor's made-up mode in CERTIFY.md: its flags exist once a vendor writes them.
VENDOR_EXAMPLE = "mycloud"
BIN = Path(sys.executable).parent


def examples(doc: Path) -> list[tuple[str, str]]:
    return EXAMPLE.findall(doc.read_text())


def all_examples() -> list[tuple[str, str, str]]:
    return [(doc.name, lang, body) for doc in DOCS for lang, body in examples(doc)]


def test_the_readme_options_table_is_the_registrys() -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- options:start[^>]*-->\n(.*?)<!-- options:end -->", readme, re.S)
    assert found is not None, "README.md lost its options:start/options:end markers"
    generated = markdown(mode_options())
    assert found.group(1) == generated, (
        "README.md's options table differs from `python -m provisioners options --markdown`; "
        "paste the command's output between the markers"
    )


def test_every_flag_the_docs_name_exists() -> None:
    known = {o.flag for o in HARNESS} | {o.flag for o in mode_options().options.values()}
    keys = {o.key for o in mode_options().options.values()}
    for doc in DOCS:
        text = doc.read_text()
        named = set(re.findall(r"--ray-[a-z0-9]+(?:-[a-z0-9]+)*", text))
        unknown = {f for f in named - known if VENDOR_EXAMPLE not in f}
        assert not unknown, f"{doc.name} names flags that do not exist: {sorted(unknown)}"
        opt_keys = set(re.findall(r"--ray-opt ([a-z][a-z0-9_]*)=", text))
        bad = {k for k in opt_keys - keys if VENDOR_EXAMPLE not in k}
        assert not bad, f"{doc.name} sets --ray-opt keys no mode declares: {sorted(bad)}"


def test_the_readme_names_every_harness_option() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [o.flag for o in HARNESS if o.flag not in readme]
    assert not missing, f"README.md does not mention {missing}"


def test_the_readme_links_a_page_per_mode_family_and_each_exists() -> None:
    readme = (REPO / "README.md").read_text()
    pages = set(re.findall(r"\]\((docs/[\w.-]+\.md)", readme))
    assert pages == {
        "docs/modes-local-docker.md",
        "docs/modes-launcher.md",
        "docs/modes-kubernetes.md",
        "docs/modes-clouds.md",
    }
    for page in pages:
        assert (REPO / page).is_file(), page
    picture = re.search(r"!\[[^\]]*\]\((docs/[\w.-]+\.png)\)", readme)
    assert picture is not None
    assert (REPO / picture.group(1)).is_file()
    assert (REPO / picture.group(1)).read_bytes().startswith(b"\x89PNG")


def test_each_document_with_examples_has_offline_ones() -> None:
    counts = {doc.name: len(examples(doc)) for doc in DOCS}
    assert counts["README.md"] >= 1
    assert counts["CERTIFY.md"] >= 3  # the entry point, the option, target.yaml


@pytest.mark.parametrize(
    ("doc", "lang", "body"),
    all_examples(),
    ids=[f"{d}-{i}-{lang}" for i, (d, lang, _) in enumerate(all_examples())],
)
def test_offline_example_runs_as_written(doc: str, lang: str, body: str, tmp_path: Path) -> None:
    if lang == "sh":
        for line in body.splitlines():
            command = line.split("  #", 1)[0].strip()
            if not command or command.startswith("#"):
                continue
            command = command.replace(".venv/bin/", f"{BIN}/")
            proc = subprocess.run(
                ["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=300
            )
            assert proc.returncode == 0, f"{doc}: `{command}` failed:\n{proc.stderr[-2000:]}"
            assert proc.stdout, f"{doc}: `{command}` printed nothing"
    elif lang == "python":
        proc = subprocess.run(
            [sys.executable, "-c", body], cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{doc}: the example failed:\n{proc.stderr[-2000:]}"
    elif lang == "yaml":  # the product file: it must pass the published schema
        path = tmp_path / "target.yaml"
        path.write_text(body)
        assert load_target(path)["mode"]
    elif lang == "toml":
        assert tomllib.loads(body)
    else:
        pytest.fail(f"{doc}: an offline example in {lang!r}, which this test cannot run")
