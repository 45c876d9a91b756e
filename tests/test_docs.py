"""The manual builds without a warning, its configuration reference is generated from the schema, the README
stays a quickstart that keeps CI's test command, and a verdicts block embedded in a page is the report's file."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed (pip install -e '.[docs]', or the dev extra)",
)
def test_docs_build_strict_with_a_generated_configuration_reference(tmp_path: Path) -> None:
    from bench.config import Suite

    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr}\n{done.stdout}"

    page = (site / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    assert "config-reference" not in page, "the hook left its marker: the reference was not generated"
    fields = Suite.model_fields
    nested = [name for name, field in fields.items() if hasattr(field.annotation, "model_fields")]
    assert len(fields) >= 5 and nested, "Suite has fewer fields than this test expects"
    for name in [*list(fields)[:5], *nested]:
        assert f"<code>{name}</code>" in page, f"suite key {name!r} is missing from the configuration reference"
    for section in nested:  # each nested section's own keys, read from its model
        for key in list(fields[section].annotation.model_fields)[:3]:
            assert f"<code>{key}</code>" in page, f"key {section}.{key} is missing from the configuration reference"

    from bench.registry import PROTOCOLS, TASKS

    for name in PROTOCOLS:  # the registered tables, which are not fields of the Suite model
        assert f"[{name}]" in page and f"[tuning.space.{name}]" in page, f"protocol {name}'s tables are missing"
        for key in PROTOCOLS[name].Config.model_fields:
            assert f"<code>{key}</code>" in page, f"key {name}.{key} is missing from the configuration reference"
    assert all(f"[tasks.{name}]" in page for name in TASKS), "a task's table is missing"
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("run_suite", "write_report", "UserError", "Registry", "Protocol", "evaluates_with"):
        assert name in api, f"{name} is missing from the API reference"

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200, "README.md is a quickstart: at most 200 lines (the manual is docs/)"
    assert "nox -s tests" in readme, "README.md must keep the test command CI runs: nox -s tests"


BLOCK = re.compile(r"<!-- (results/[^/\s]+/(?:table|verdicts|plan|variance)\.md) -->\n(.*?)<!-- end -->", re.S)


def verdict_blocks(text: str) -> list[tuple[str, str]]:
    """(path, body) of every ``<!-- results/<suite>/verdicts.md -->`` (or ``table.md``) ... ``<!-- end -->``
    block of a page."""
    return [(m[1], m[2]) for m in BLOCK.finditer(text)]


def test_every_embedded_verdicts_block_is_the_reports_file(tmp_path: Path) -> None:
    from bench.report.write import write_report

    from .test_equivalence import TINY, paired_frame

    write_report(paired_frame({"rotation": TINY}), tmp_path / "results" / "demo")
    written = (tmp_path / "results" / "demo" / "verdicts.md").read_text(encoding="utf-8")
    page = f"Prose.\n\n<!-- results/demo/verdicts.md -->\n{written}<!-- end -->\n\nMore prose.\n"
    assert verdict_blocks(page) == [("results/demo/verdicts.md", written)]  # the file embeds whole, as it is
    assert "<!--" not in written and written.endswith("\n")
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path, body in verdict_blocks(page.read_text(encoding="utf-8")):
            assert (ROOT / path).is_file(), f"{page.name} embeds {path}, which the report did not write"
            assert body == (ROOT / path).read_text(encoding="utf-8"), (
                f"{page.name}: the block of {path} differs from the file; paste the file between the markers"
            )
