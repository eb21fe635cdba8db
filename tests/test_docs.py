"""Every ```python block of README.md and docs/*.md runs as written; the front page keeps its word.

The rule (also in docs/CONVENTIONS.md): each ```python fence is one test, with an id naming its
file and first line (``README.md:42``). It runs in a fresh interpreter from an empty temporary
folder, with ``MAGNET_LAB_CACHE_DIR``, ``MAGNET_LAB_FIGURES_DIR`` and ``MAGNET_LAB_REPORTS_DIR``
inside that folder and progress bars off, so a block cannot read or write the repository's
caches. Tracebacks point at the markdown file's own line numbers. A block whose first line is a
``# needs: ...`` mark (e.g. ``# needs: user file (stylegan2-ffhq-config-f.pkl)``) needs a file
only a user has: it is skipped visibly with that line as the reason, and no other block is ever
skipped. Shell fences are not run, but the two front-page commands must be Makefile targets.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NEEDS_MARK = re.compile(r"^#\s*needs:\s*\S")
FENCE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Fence:
    page: Path
    line: int  # 1-based line number of the block's first code line
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_fences(page: Path) -> list[Fence]:
    """The ```python blocks of a markdown page, in order, with the line each starts on."""
    fences, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"{page.name}:{start}: unclosed ```python block"
            fences.append(Fence(page, start + 1, "\n".join(body) + "\n"))
        i += 1
    return fences


FENCES = [f for page in PAGES for f in python_fences(page)]

# Executes the block's text under the markdown file's name, padded so line numbers match it.
RUNNER = ("import sys; path, name, first = sys.argv[1], sys.argv[2], int(sys.argv[3]); "
          "src = '\\n' * (first - 1) + open(path).read(); "
          "exec(compile(src, name, 'exec'), {'__name__': '__main__'})")


@pytest.mark.parametrize("fence", FENCES, ids=[f.id for f in FENCES])
def test_python_block_runs(fence: Fence, tmp_path: Path) -> None:
    first = fence.code.splitlines()[0].strip() if fence.code.strip() else ""
    if NEEDS_MARK.match(first):
        pytest.skip(f"{fence.id} is marked `{first}`")
    script = tmp_path / "block.py"
    script.write_text(fence.code)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MAGNET_LAB_CACHE_DIR": str(tmp_path / "cache"),
           "MAGNET_LAB_FIGURES_DIR": str(tmp_path / "figures"),
           "MAGNET_LAB_REPORTS_DIR": str(tmp_path / "reports"),
           "MAGNET_LAB_PROGRESS": "0",
           "MAGNET_LAB_HEADLESS": "1",
           "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(script), str(fence.page),
                           str(fence.line)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=FENCE_TIMEOUT_S)
    assert done.returncode == 0, f"{fence.id} failed:\n{done.stderr[-4000:]}"


def test_every_page_with_code_has_runnable_python_and_the_readme_leads_with_it():
    readme = python_fences(ROOT / "README.md")
    assert readme, "README.md has no python example"
    assert not NEEDS_MARK.match(readme[0].code.splitlines()[0]), \
        "the README's first python block must run without user files"
    assert len(FENCES) >= 8, [f.id for f in FENCES]


def test_needs_marks_are_only_first_lines():
    """A `# needs:` mark lower in a block would not skip it: it must be the first line."""
    for f in FENCES:
        later = [ln for ln in f.code.splitlines()[1:] if NEEDS_MARK.match(ln.strip())]
        assert not later, f"{f.id}: `# needs:` must be the block's first line"


def test_front_page_commands_are_makefile_targets():
    makefile = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    for target in ("reports", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}\s*:", makefile, re.M), f"no `{target}:` target in Makefile"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    first_screen = "\n".join(lines[:150])
    for must in ("make reports", "make test", "load_generator", "## Your own generator",
                 "00_explore", "04_semantic_attributes"):
        assert must in first_screen, must


def test_relative_links_resolve():
    for page in PAGES + [ROOT / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_docs_carry_no_project_history():
    for page in PAGES:
        text = page.read_text()
        hits = re.findall(r"\bissues? \d+\b|\bused to\b", text, flags=re.I)
        assert not hits, f"{page.name}: project history {hits} belongs in CHANGELOG.md"
