"""A certified archive laid out as a submission, the way CNCF's k8s-conformance repository is.

k8s-conformance keeps one directory per Kubernetes release and in it one per product, each with
``PRODUCT.yaml``, a ``README.md`` saying how to reproduce the run, and the results (``e2e.log``,
``junit_01.xml``). ``python -m reports submission ARCHIVE DIR`` writes the same for Ray::

    DIR/v2.60/<vendor>-<name>/
        PRODUCT.yaml        the archive's target.yaml, byte for byte
        README.md           the product, the verdict of every rule, how to reproduce and verify
        junit.xml           the run's JUnit results
        progress.log        the run's log (k8s-conformance's e2e.log)
        ray-conformance-<mode>-<run-id>.tar.gz   the archive itself: what the reviewer verifies

Only an archive that certifies is laid out: the rules are checked first.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from reports.certify import TARGET_FILE, load_target, opened
from reports.junit import JUNIT_FILE
from reports.model import PROGRESS_FILE, BundleError, load_results
from reports.rules import Finding, evaluate

PRODUCT_FILE = "PRODUCT.yaml"
README_FILE = "README.md"


class NotCertified(Exception):
    """The archive breaks a rule; the message lists the rules that failed."""


def slug(text: str) -> str:
    """A directory name from a product's words: lower case, dashes, nothing else."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "product"


def lay_out(archive: Path, out: Path) -> Path:
    """Write the submission of ``archive`` under ``out``; return its product directory."""
    if not archive.is_file():
        raise BundleError(f"{archive}: not an archive (submit the .tar.gz the run wrote)")
    with opened(archive) as bundle:
        findings = evaluate(bundle)
        failed = [f.rule.id for f in findings if not f.passed]
        if failed:
            raise NotCertified(f"{archive}: does not certify (rules failed: {', '.join(failed)})")
        target = load_target(bundle / TARGET_FILE)
        results = load_results(bundle)
        line = ".".join(target["ray_version"].split(".")[:2])
        dest = out / f"v{line}" / slug(f"{target['vendor']} {target['name']}")
        if dest.exists():
            raise BundleError(f"{dest}: exists (one submission per product and Ray release)")
        dest.mkdir(parents=True)
        shutil.copyfile(bundle / TARGET_FILE, dest / PRODUCT_FILE)
        for name in (JUNIT_FILE, PROGRESS_FILE):
            if (bundle / name).is_file():
                shutil.copyfile(bundle / name, dest / name)
    shutil.copyfile(archive, dest / archive.name)
    (dest / README_FILE).write_text(
        readme(target, archive.name, results.run_id, findings), encoding="utf-8"
    )
    return dest


def readme(target: dict[str, str], archive: str, run_id: str, findings: list[Finding]) -> str:
    """The submission's README: what was certified, how, and every rule's verdict."""
    rules = "\n".join(f"- PASS `{f.rule.id}`: {f.rule.text}" for f in findings)
    return f"""# {target["vendor"]} {target["name"]} {target["version"]}

{target["description"]}

| | |
|---|---|
| type | {target["type"]} |
| mode | `{target["mode"]}` |
| Ray | {target["ray_version"]} |
| KubeRay | {target["kuberay_version"]} |
| platform | {target["platform_version"]} |
| website | {target["website_url"]} |
| documentation | {target["documentation_url"]} |
| contact | {target["contact_email_address"]} |
| run | `{run_id}` |

## Reproduce

Install ray-conformance and the package that registers the `{target["mode"]}` mode, write
`{PRODUCT_FILE}` as `target.yaml`, then:

```sh
pytest --ray-certify=target.yaml
```

## Verify

```sh
python -m reports verify {archive} --certify
```

Every rule held when this submission was laid out:

{rules}
"""
