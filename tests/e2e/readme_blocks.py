"""The README's fenced blocks, and the invisible markers that say how the tour test runs them.

Every ```sh and ```python block of README.md is a step of the tour and runs, in order, unless
an HTML comment on the line right before its opening fence says otherwise (GitHub does not
render comments, so a reader never sees them):

    <!-- tour: skip (why) -->            not run: the reason is required (e.g. "runs forever")
    <!-- tour: file NAME -->             any block: its text is written to NAME in the tour's folder
    <!-- tour: background (why) -->      sh: starts what keeps running (the broker) in its own process
                                         group; the test waits for the broker, and stops it at the end
    <!-- tour: known-defect (what) -->   runs, and is expected to fail because of a known defect:
                                         the test reports it as xfail, and fails once it passes

A multi-line comment `<!-- tour: setup (why)` ... `-->` holds hidden steps: the fenced blocks
inside it run in their place, invisible to the reader. Blocks in any other language (a file
layout, an example) are documentation, unless marked `file`. A marker the parser does not
understand, one not followed by a fence, or a fence such as ```bash that would escape the test,
is an error: nothing is skipped by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RUNNABLE = ("sh", "python")
# other names for runnable languages: refused, so that no command escapes the test by its fence
ALIASES = {"bash": "sh", "shell": "sh", "console": "sh", "zsh": "sh", "py": "python", "python3": "python"}
KINDS = ("skip", "file", "background", "known-defect")
_MARKER = re.compile(r"<!--\s*tour:\s*(?P<kind>[a-z-]+)(?:\s+(?P<arg>.*?))?\s*-->")
_SETUP = re.compile(r"<!--\s*tour:\s*setup(?:\s+(?P<arg>.*))?$")
_FENCE = re.compile(r"^```(?P<lang>[^\s`]*)[^`]*$")  # the info string's first word is the language


class ReadmeError(ValueError):
    """The README's tour markers are malformed."""


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence in README.md
    lang: str
    text: str
    kind: str  # "run", "skip", "file", "background", "known-defect" or "doc"
    arg: str = ""  # the reason, file name or defect description
    hidden: bool = False  # inside a `<!-- tour: setup` comment

    @property
    def runnable(self) -> bool:
        return self.kind not in ("skip", "doc")

    def where(self) -> str:
        hidden = " (hidden setup)" if self.hidden else ""
        return f"README.md line {self.line}: ```{self.lang}{hidden}"


def _reason(arg: str | None) -> str:
    text = (arg or "").strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return text


def _block(line: int, lang: str, text: str, marker: tuple[str, str] | None, hidden: bool) -> Block:
    if lang in ALIASES:
        raise ReadmeError(
            f"line {line}: write ```{ALIASES[lang]}, not ```{lang}: the tour test runs only those"
        )
    if marker is None:
        return Block(line, lang, text, "run" if lang in RUNNABLE else "doc", hidden=hidden)
    kind, arg = marker
    if kind == "file":
        if not arg or arg.startswith(("/", "..")) or "/../" in arg:
            raise ReadmeError(f"line {line}: `tour: file` needs a relative file name, not {arg!r}")
        return Block(line, lang, text, kind, arg, hidden)
    if lang not in RUNNABLE:
        raise ReadmeError(f"line {line}: `tour: {kind}` on a ```{lang} block, which never runs")
    if kind in ("skip", "known-defect") and not arg:
        raise ReadmeError(f"line {line}: `tour: {kind}` needs a reason in parentheses")
    if kind == "background" and lang != "sh":
        raise ReadmeError(f"line {line}: only a ```sh block can run in the background")
    if hidden and kind == "skip":
        raise ReadmeError(f"line {line}: a hidden setup block that is skipped has no reason to exist")
    return Block(line, lang, text, kind, arg, hidden)


def parse(markdown: str) -> list[Block]:
    """Every fenced block of the document, in order, with how the tour treats it."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    marker: tuple[str, str] | None = None
    marker_line = 0
    hidden = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        fence = _FENCE.match(line)
        if fence:
            start = i + 1
            i += 1
            body: list[str] = []
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ReadmeError(f"line {start}: the fenced block is never closed")
            if hidden and fence["lang"] not in RUNNABLE:
                raise ReadmeError(f"line {start}: a hidden setup block must be ```sh or ```python")
            blocks.append(_block(start, fence["lang"], "\n".join(body) + "\n", marker, hidden))
            marker = None
            i += 1
            continue
        if marker is not None:
            raise ReadmeError(f"line {marker_line}: a `tour:` marker must be right before a fenced block")
        setup = _SETUP.match(stripped)
        if setup and "-->" not in stripped:
            if hidden:
                raise ReadmeError(f"line {i + 1}: hidden setup comments do not nest")
            if not _reason(setup["arg"]):
                raise ReadmeError(f"line {i + 1}: `tour: setup` needs a reason in parentheses")
            hidden = True
        elif hidden and stripped == "-->":
            hidden = False
        elif "tour:" in stripped and "<!--" in stripped:
            found = _MARKER.fullmatch(stripped)
            if found is None or found["kind"] not in KINDS:
                raise ReadmeError(
                    f"line {i + 1}: unknown tour marker {stripped!r}; known: {', '.join(KINDS)}"
                )
            marker = (found["kind"], _reason(found["arg"]))
            marker_line = i + 1
        i += 1
    if marker is not None:
        raise ReadmeError(f"line {marker_line}: a `tour:` marker must be right before a fenced block")
    if hidden:
        raise ReadmeError("a `<!-- tour: setup` comment is never closed")
    return blocks


def tour(markdown: str) -> list[Block]:
    """The tour's blocks: every sh and python block, and every block written to a file."""
    return [b for b in parse(markdown) if b.kind != "doc"]
