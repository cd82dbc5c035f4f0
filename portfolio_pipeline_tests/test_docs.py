"""Self-contained documentation: every Markdown file that code, configuration comments or
docs name exists in the repository, and nothing points outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("README.md", "docs", "config", "portfolio_pipeline", "streaming_service",
           "portfolio_pipeline_tests", "benchmarks", "deploy", "pyproject.toml", "dagster.yaml", "workspace.yaml")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml"}
MD_REF = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.md)\b")
OUTSIDE = re.compile(r"\.\./shared|/work/shared|/work/main")


def _files() -> list[Path]:
    out: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out.extend(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()
                       and "__pycache__" not in p.parts)
    return out


def test_every_markdown_reference_exists_in_the_repository() -> None:
    by_name: dict[str, list[Path]] = {}
    for p in ROOT.rglob("*.md"):
        if ".venv" not in p.parts and "node_modules" not in p.parts:
            by_name.setdefault(p.name, []).append(p)
    missing: list[str] = []
    for f in _files():
        text = f.read_text(encoding="utf-8", errors="replace")
        for ref in MD_REF.findall(text):
            exact = (ROOT / ref).is_file() or (f.parent / ref).is_file()
            if not exact and not ("/" not in ref and ref in by_name):
                missing.append(f"{f.relative_to(ROOT)}: {ref}")
    assert missing == [], missing


def test_nothing_points_outside_the_repository() -> None:
    found = [f"{f.relative_to(ROOT)}" for f in _files()
             if f.name != "test_docs.py" and OUTSIDE.search(f.read_text(encoding="utf-8", errors="replace"))]
    assert found == []


def test_the_architecture_doc_and_the_readme_point_at_each_other() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert "docs/ARCHITECTURE.md" in readme
    assert "README" in doc and "## Units" in doc and "## Safety contracts" in doc
