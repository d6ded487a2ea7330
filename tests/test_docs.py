"""The documentation site builds with warnings as errors, and its map is complete: every
Markdown page under docs/ is in the site's nav and linked from docs/index.md itself (the
committed reports from docs/reports/index.md), and every page is reachable from the index
by links (a page nobody can find is a page nobody reads)."""

from __future__ import annotations

import fnmatch
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


def test_every_page_is_in_the_nav_and_on_the_map():
    """A new page must be added to mkdocs.yml's nav and to docs/index.md; a committed
    report (``reports/*/report.md``, kept out of the nav) to docs/reports/index.md."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_pages(config["nav"]))
    outside_nav = [g.strip() for g in config.get("not_in_nav", "").splitlines() if g.strip()]
    on_map = _links(DOCS / "index.md") | {(DOCS / "index.md").resolve()}
    reports = _links(DOCS / "reports" / "index.md")
    problems = []
    for page in sorted(DOCS.rglob("*.md")):
        rel = page.relative_to(DOCS).as_posix()
        if any(fnmatch.fnmatch(rel, g) for g in outside_nav):
            if page.resolve() not in reports:
                problems.append(f"{rel}: not linked from reports/index.md")
            continue
        if rel not in nav:
            problems.append(f"{rel}: not in mkdocs.yml's nav")
        if page.resolve() not in on_map:
            problems.append(f"{rel}: not linked from docs/index.md")
    assert not problems, "; ".join(problems)
