"""The project's pages read as their authors meant on any CommonMark renderer (GitHub's
included): every code fence closed where it was opened, every table a table, and no section of
the results page cut off in mid-sentence by the next one."""

import json
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = sorted((ROOT / "docs" / "results" / "sections").glob("*.md"))
PAGES = [
    ROOT / "README.md",
    ROOT / "RESULTS.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "docs" / "params.md",
    *SECTIONS,
]
MD = MarkdownIt("commonmark").enable("table")


def problems(text: str, alone: bool = False) -> list[str]:
    """What a CommonMark parser makes of ``text`` that its author did not mean: a fence that
    runs to the end of the text (never closed), a line of a pipe table that parsed as no table,
    and, with ``alone`` (a section of a generated page), a last paragraph without its full stop."""
    lines = text.splitlines()
    tokens = MD.parse(text)
    found, in_table = [], set()
    for t in tokens:
        if t.type == "fence":
            start, end = t.map
            closing = lines[end - 1].strip() if end - 1 > start else ""
            if not closing.startswith(t.markup):
                found.append(f"line {start + 1}: the code fence {t.markup} is never closed")
        elif t.type == "table_open":
            in_table.update(range(*t.map))
    code = {i for t in tokens if t.type in ("fence", "code_block") for i in range(*t.map)}
    for i, line in enumerate(lines):
        if (
            line.startswith("|")
            and line.rstrip().endswith("|")
            and i not in in_table
            and i not in code
        ):
            found.append(f"line {i + 1}: a table line that is no table: {line[:60]}")
    if alone:
        paragraphs = [t for t in tokens if t.type == "inline" and t.map]
        blocks = [
            t
            for t in tokens
            if t.map
            and t.level == 0
            and t.type.endswith("_open")
            or t.type in ("fence", "code_block")
        ]
        last_block = max(blocks, key=lambda t: t.map[1]) if blocks else None
        if last_block is not None and last_block.type == "paragraph_open":
            last = [p for p in paragraphs if p.map[0] == last_block.map[0]][-1].content.rstrip()
            if not last.endswith((".", ":", ")", "!", "?", "*", "`")):
                found.append(f"the section ends mid-sentence: ...{last[-60:]!r}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_parse_as_written(page):
    assert not problems(page.read_text(), alone=page in SECTIONS), page


def test_the_check_sees_an_open_fence_a_broken_table_and_a_cut_sentence():
    assert any("never closed" in p for p in problems("# A\n\n```\ncode\n\n## B\n\ntext.\n"))
    assert any("no table" in p for p in problems("text\n| a | b |\n|---|\n| 1 | 2 |\n"))
    assert any("mid-sentence" in p for p in problems("## A\n\nThe test guards\n", alone=True))
    assert not problems(
        "## A\n\n```\ncode\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nDone.\n", alone=True
    )


# words about how the software was built, not about the software: issue numbers, working
# sessions, the first person, the development history
HISTORY = re.compile(
    r"\bissue \d+|\bsessions?\b|\b(I|we|our|us)\b|next commit|paused for", re.IGNORECASE
)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("page", PAGES + NOTEBOOKS, ids=lambda p: p.name)
def test_pages_speak_of_the_software_only(page):
    text = page.read_text()
    if page.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    prose = re.sub(
        r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S)
    )  # code is not prose
    prose = prose.replace("i.e.", "")
    found = sorted({m.group(0) for m in HISTORY.finditer(prose)})
    assert not found, f"{page.name}: {found}"
