"""The documentation site builds with warnings as errors, and its map is complete: the
index links every page of the nav, and every Markdown page under docs/ is reachable from
the index by links (a page nobody can find is a page nobody reads)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def _links(page: Path) -> set[Path]:
    return {(page.parent / m).resolve() for m in LINK.findall(page.read_text())}


def test_docs_site_builds_with_warnings_as_errors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("SISAClassifier", "forget_groups", "VerifyReport", "ExecutionSettings"):
        assert name in api, f"the API reference lost {name}"
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "sisa forget" in cli and "--forgotten-id" in cli  # the parser's own help text


def test_index_links_every_nav_page_and_every_page_is_reachable():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    index = DOCS / "index.md"
    direct = _links(index)
    for page in _nav_pages(config["nav"]):
        if page not in ("index.md",):
            assert (DOCS / page).resolve() in direct, f"docs/index.md does not link {page}"
    seen, todo = {index.resolve()}, [index]
    while todo:
        for target in _links(todo.pop()) - seen:
            if target.is_file() and DOCS in target.parents:
                seen.add(target)
                todo.append(target)
    missing = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")
                     if p.resolve() not in seen)
    assert not missing, f"pages no link reaches from docs/index.md: {missing}"
