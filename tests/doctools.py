"""README.md and docs/*.md as the tests read them: pages, fenced code blocks, marked blocks.

A block is "marked" by an HTML comment `<!-- name -->` right before its fence; the same example may
appear on several pages (README shows one, its docs page the rest), and then must be the same text.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def read(name: str) -> str:
    """A page by its path from the repository root, e.g. "README.md" or "docs/rest-api.md"."""
    return (ROOT / name).read_text(encoding="utf-8")


def pages() -> list[Path]:
    """Every Markdown page the project publishes: README, CHANGELOG and docs/ (sub-folders too)."""
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]


def fenced(text: str, lang: str) -> list[str]:
    """The bodies of the ```lang fences in `text`, in order."""
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def marked(name: str, *where: str) -> str:
    """The block after `<!-- name -->` on the pages `where` (all of them must show it, identically)."""
    found = {}
    for page in where:
        match = re.search(rf"<!-- {name} -->\s*```\w*\n(.*?)```", read(page), re.S)
        assert match, f"{page} has no code block after <!-- {name} -->"
        found[page] = match.group(1)
    assert len(set(found.values())) == 1, f"<!-- {name} --> differs between {', '.join(found)}"
    return next(iter(found.values()))
