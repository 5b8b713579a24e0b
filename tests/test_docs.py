"""README and docs/ stay true and navigable: every relative link and #anchor resolves, every
repository path and `WAN_DEMO_*` name they mention exists, README stays a short front page that
links every docs page and shows the picture tests/screenshot.py makes, and the GPU quick start
names what today's planner picks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
from doctools import DOCS, ROOT, fenced, pages, read
from screenshot import DEFAULT_OUT, VIEWPORT

from wan_demo.core.settings import Settings

README_MAX_LINES = 200
PNG_MAX_BYTES = 300_000  # the committed screenshot stays small
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
ROOMS = ("core", "model", "media", "prompt", "jobs", "web", "rest")  # short paths: under wan_demo/
PATH = re.compile(rf"(?<![\w./<>-])((?:wan_demo|tests|bench|docs|examples|\.ci|{'|'.join(ROOMS)})/[\w./-]*)")
CHANGELOG_VOICE = ("as before", "before this version", "the first version", "since this version")


def prose(text: str) -> str:
    """Markdown without fenced blocks and inline code (links there are examples, not links)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose_keep_code(path.read_text()), flags=re.M):
        base, n = slug(heading), 0
        while (name := base if n == 0 else f"{base}-{n}") in found:  # duplicates get -1, -2, ...
            n += 1
        found.add(name)
    return found


def prose_keep_code(text: str) -> str:
    """Markdown without fenced blocks (a `# comment` in a bash block is no heading)."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


def page_ids() -> list[str]:
    return [str(p.relative_to(ROOT)) for p in pages()]


@pytest.mark.parametrize("name", page_ids())
def test_every_relative_link_and_anchor_resolves(name):
    page = ROOT / name
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{name}: link to {target!r}: no such file"
        assert resolved.is_relative_to(ROOT), f"{name}: link to {target!r} leaves the repository"
        if anchor:
            assert resolved.suffix == ".md", f"{name}: #anchor on a file that is not a page: {target!r}"
            assert anchor in anchors(resolved), f"{name}: link to {target!r}: no such heading"


@pytest.mark.parametrize("name", page_ids())
def test_every_repository_path_named_exists(name):
    text = read(name)
    for path in PATH.findall(text):
        path = path.rstrip(".")
        short = path.split("/")[0] in ROOMS
        if short and not path.endswith((".py", "/")):  # "jobs/s" is a rate, not a path
            continue
        root = ROOT / "wan_demo" if short else ROOT
        assert (root / path).exists(), f"{name} names {path!r}, which does not exist"
    for module in re.findall(r"python -m ((?:wan_demo|bench|tests)\.[\w.]+)", text):
        file = ROOT / module.replace(".", "/")
        assert file.with_suffix(".py").exists() or file.is_dir(), f"{name}: no module {module}"
    for script in re.findall(r"python ((?:tests|bench|examples)/[\w/]+\.py)", text):
        assert (ROOT / script).exists(), f"{name}: no script {script}"


@pytest.mark.parametrize("name", page_ids())
def test_every_setting_named_exists(name):
    known = {f"WAN_DEMO_{f.name.upper()}" for f in fields(Settings)}
    text = read(name)
    typos = set(re.findall(r"(WAN_DEMO_[A-Z0-9_]+) is not a setting", text))  # a quoted refusal
    unknown = set(re.findall(r"WAN_DEMO_[A-Z][A-Z0-9_]*", text)) - known - typos
    assert not unknown, f"{name} names settings that do not exist: {sorted(unknown)}"


@pytest.mark.parametrize("name", page_ids())
def test_no_changelog_voice(name):
    if name == "CHANGELOG.md":
        return
    text = read(name).lower()
    assert not [p for p in CHANGELOG_VOICE if p in text], name


def test_readme_is_a_short_front_page():
    text = read("README.md")
    assert len(text.splitlines()) <= README_MAX_LINES
    front = text.split("---\n")[1]  # the Spaces front matter opens the file
    assert text.startswith("---\n") and "license: apache-2.0\n" in front and "sdk: gradio\n" in front
    preload = re.search(r"preload_from_hub:\n((?:  - .*\n)+)", front).group(1)
    for entry in re.findall(r"  - (.*)", preload):  # "repo" or "repo file1,file2" (Spaces' format)
        assert re.fullmatch(r"[\w.-]+/[\w.-]+( [\w./-]+(,[\w./-]+)*)?", entry), entry
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(prose(text))}
    for page in sorted(DOCS.glob("*.md")):
        assert page.resolve() in linked, f"README links no {page.relative_to(ROOT)}"


def test_readme_shows_the_screenshot_the_script_makes():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", read("README.md"))
    assert images[0] == str(DEFAULT_OUT)  # the first thing after the title: the app
    png = ROOT / DEFAULT_OUT
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) <= PNG_MAX_BYTES
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])


def test_readme_names_the_tested_versions():
    text = read("README.md")
    pins = dict(re.findall(r"^([\w-]+)(?:\[[\w,]+\])?==([\d.]+)", read("requirements.txt"), flags=re.M))
    for package in ("diffusers", "transformers", "gradio"):
        assert f"{package} {pins[package]}" in text
    torch_pin = re.search(r"torch==([\d.]+)", fenced(text, "bash")[0]).group(1)
    assert f"torch {torch_pin}" in text


def gpu_rows(name: str) -> list[list[str]]:
    """Rows of the page's short plan table (header `| card | host RAM | ...`, 5 columns)."""
    table = re.search(r"^\| card \| host RAM \|[^\n]*\n\|---(?:\|---){4}\|\n((?:\|.*\n)+)", read(name), re.M)
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.group(1).splitlines()]


@pytest.mark.parametrize("name", ["README.md", "docs/gpu-and-memory.md"])
def test_gpu_quick_start_table_is_what_the_planner_picks(name):
    from wan_demo.model.memory.estimate import Shape
    from wan_demo.model.memory.plan import Budget
    from wan_demo.model.memory.sizes import real_sizes
    from wan_demo.model.memory.start import recommend

    sizes = real_sizes()
    for card, ram, weights, placement, vram in gpu_rows(name):
        cards = [int(c) for c in re.findall(r"\d+", card)]
        least = int(re.match(r"\d+", ram).group())
        rams = [r for r in (16, 32, 64) if r >= least] if "or more" in ram else [least]
        want = re.search(r"(Q\d\w*?)(?:\.gguf| GGUF)", weights)
        peaks = [float(v) for v in re.findall(r"[\d.]+", vram)]
        for i, c in enumerate(cards):
            for r in rams:
                plan = recommend(Budget(c, r, "docs"), sizes, Shape())
                assert plan.fits and plan.strategy.name == placement, (name, c, r, plan.summary)
                assert plan.weights == (want.group(1) if want else "bf16"), (name, c, r)
                assert round(plan.peak_vram_gb, 1) == peaks[i if len(peaks) > 1 else 0], (name, c, r)


def test_full_plan_table_is_what_bench_memory_plan_prints():
    from bench.memory_plan import CARDS_GB, HOST_RAM_GB, REHEARSAL, row
    from wan_demo.model.memory.estimate import Shape

    page, measured = read("docs/gpu-and-memory.md"), json.loads(REHEARSAL.read_text())
    for card in CARDS_GB:
        for ram in HOST_RAM_GB:
            assert row(card, ram, Shape(), measured) in page, (card, ram)  # with the rehearsals' figures


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_gpu_commands_parse_and_name_real_files():
    """The GPU blocks cannot run here (no GPU, no downloads): bash parses them, and every GGUF file
    they name is one the planner knows."""
    from wan_demo.model.memory.weights import GGUF_WEIGHTS

    known = {w.file for w in GGUF_WEIGHTS}
    for name in ("README.md", "docs/gpu-and-memory.md"):
        blocks = [
            b for b in fenced(read(name), "bash") if "WAN_DEMO_TRANSFORMER_FILE" in b or "hf download" in b
        ]
        assert blocks, name
        for block in blocks:
            assert subprocess.run(["bash", "-n", "-c", block], capture_output=True).returncode == 0, block
        for file in re.findall(r"city96/[\w./-]+\.gguf", read(name)):
            assert file in known, f"{name}: {file} is not a file the planner names"


def test_doctor_example_prints_what_the_page_shows(tmp_path):
    """The page's `--doctor` block, run as written with an empty hub cache: its shown lines appear."""
    import os
    import sys

    page = read("docs/gpu-and-memory.md")
    command = re.search(r"<!-- doctor-example -->\n```bash\n(.*?)\n```", page, re.S).group(1)
    shown = re.search(re.escape(command) + r"\n```\n\n```text\n(.*?)```", page, re.S).group(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN_DEMO_")}
    env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")  # nothing downloaded
    argv = [sys.executable, *command.split()[1:]]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # weights missing: not ready yet
    for line in shown.splitlines():
        if line != "...":
            assert line in done.stdout.splitlines(), line
