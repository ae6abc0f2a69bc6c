"""Human output and the error boundary shared by both command lines (`msmt`, `msmt-broker`).

Standard library only, so the agency client stays light: tables wrapped to the terminal width
(`COLUMNS` is honoured), ISO-8601 times in the local zone, key ids in the short spoken form,
a progress bar on a terminal only, "did you mean" suggestions, and `boundary()`, which turns
every error a person can cause into one sentence on stderr and a documented exit code.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import sys
import textwrap
import tomllib
import traceback
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .core.errors import MsmtError
from .core.keys import short_fingerprint

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE: a bug, not something the user did
EXIT_INTERRUPTED = 130  # 128 + SIGINT

DEBUG_ENV = "MSMT_DEBUG"
KEY_ID_RE = re.compile(r"^[0-9a-f]{32,64}$")


class UserError(Exception):
    """A mistake the person can fix: one sentence, and the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- suggestions -----------------------------------------------------------------------------


def did_you_mean(value: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for a near-miss of one of `known`, else ''."""
    choices = sorted(set(known))
    folded = {c.casefold(): c for c in choices}
    if value.casefold() in folded:
        return f" (did you mean {folded[value.casefold()]}?)"
    cutoff = 0.5 if len(value) <= 3 else 0.6  # G8 -> G7: one of two characters differs
    close = difflib.get_close_matches(value.casefold(), list(folded), n=2, cutoff=cutoff)
    if not close:
        return ""
    return f" (did you mean {' or '.join(folded[c] for c in close)}?)"


def check_choice(what: str, value: str, known: Sequence[str], *, code: int = EXIT_USAGE) -> str:
    """`value` when it is one of `known`; else a UserError naming the choices and a near-miss."""
    if value in known:
        return value
    listing = ", ".join(known) if len(known) <= 16 else ", ".join(known[:16]) + ", …"
    raise UserError(f"{what} {value!r} is not known{did_you_mean(value, known)}; known: {listing}", code)


# --- values for people -----------------------------------------------------------------------


def local_time(ms: int | None) -> str:
    """Epoch milliseconds as ISO 8601 in the local zone, to the second ('-' for none)."""
    if ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def fingerprint(key_id: str) -> str:
    """A key id in the short spoken form (W7OD-PB5T-…), as `msmt keys show` prints it."""
    try:
        return short_fingerprint(key_id)
    except ValueError:
        return key_id


def human(value: Any) -> str:
    """One cell: lists joined, mappings as key=value, nothing as '-'; never a Python repr."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(human(v) for v in value) or "-"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={human(v)}" for k, v in value.items()) or "-"
    if isinstance(value, bytes):
        return f"({len(value)} bytes)"
    return str(value)


def humanize(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row for people: `*_ms` times become local ISO 8601 (`at_ms` -> `at`), key ids gain
    their spoken fingerprint, base64 public keys are left to --json."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_ms") and (
            value is None or (isinstance(value, int) and not isinstance(value, bool))
        ):
            out[key.removesuffix("_ms")] = local_time(value)
        elif key == "key_id" and isinstance(value, str) and KEY_ID_RE.fullmatch(value):
            out[key] = value
            out["fingerprint"] = fingerprint(value)
        elif key == "public_key" and isinstance(value, str):
            continue  # kilobytes of base64: --json has it; people compare fingerprints
        else:
            out[key] = value
    return out


def terminal_width() -> int:
    """The width to wrap to: `COLUMNS`, else the terminal's, else 100."""
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width, break_on_hyphens=False) or [""]
    return lines


def _printable(text: str) -> str:
    """No control sequences from data on the terminal."""
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


def table(rows: Sequence[Mapping[str, Any]], width: int | None = None) -> str:
    """Rows as columns headed by the first row's keys; cells wrap (at spaces, or hard) so the
    table fits `width`; the widest columns give up space first."""
    if not rows:
        return "(none)"
    width = width or terminal_width()
    columns = list(rows[0])
    cells = [[_printable(human(row.get(c))) for c in columns] for row in rows]
    headers = [c.upper().replace("_", " ") for c in columns]
    natural = [
        max([display_width(h)] + [max(display_width(x) for x in r[i].splitlines() or [""]) for r in cells])
        for i, h in enumerate(headers)
    ]
    gap = 2
    widths = list(natural)
    budget = width - gap * (len(columns) - 1)
    # first wrap text at spaces (down to its longest word, at most 30), then cut long words
    words = [
        min(n, max([display_width(h)] + [display_width(w) for r in cells for w in r[i].split()] or [1]), 30)
        for i, (n, h) in enumerate(zip(natural, headers, strict=True))
    ]
    floor = [min(n, max(6, display_width(h))) for n, h in zip(natural, headers, strict=True)]
    atoms = [  # times, fingerprints, codes (one short word each) are cut only when nothing else gives
        n if all(len(r[i].split()) <= 1 and display_width(r[i]) <= 25 for r in cells) else f
        for i, (n, f) in enumerate(zip(natural, floor, strict=True))
    ]
    for limit in (words, atoms, floor):
        while sum(widths) > budget:
            widest = max(range(len(widths)), key=lambda i: widths[i] - limit[i])
            if widths[widest] <= limit[widest]:
                break  # this phase can shrink no further
            widths[widest] -= 1
    out = []
    for values in [headers, *cells]:
        wrapped = [_wrap(v, w) for v, w in zip(values, widths, strict=True)]
        for line_no in range(max(len(w) for w in wrapped)):
            parts = []
            for i, lines in enumerate(wrapped):
                text = lines[line_no] if line_no < len(lines) else ""
                parts.append(text + " " * (widths[i] - display_width(text)))
            out.append((" " * gap).join(parts).rstrip())
    return "\n".join(out)


def key_values(mapping: Mapping[str, Any], width: int | None = None) -> str:
    """`key  value` lines, values wrapped under themselves; nested mappings indented."""
    width = width or terminal_width()
    lines: list[str] = []

    def walk(data: Mapping[str, Any], indent: int) -> None:
        data = humanize(data)
        key_width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            label = " " * indent + key.replace("_", " ").ljust(key_width)
            if isinstance(value, Mapping) and value:
                lines.append(label.rstrip())
                walk(value, indent + 2)
            elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
                lines.append(label.rstrip())
                for item in value:
                    lines.append(" " * (indent + 2) + human(humanize(item)))
            else:
                room = max(20, width - len(label) - 2)
                wrapped = _wrap(_printable(human(value)), room)
                lines.append(f"{label}  {wrapped[0]}".rstrip())
                lines.extend(" " * (len(label) + 2) + more for more in wrapped[1:])

    walk(mapping, 0)
    return "\n".join(lines)


def emit(value: Any, *, as_json: bool, rows: Sequence[Mapping[str, Any]] | None = None) -> None:
    """JSON for programs with --json; otherwise a wrapped table (or key/value lines) for people."""
    if as_json:
        print(json.dumps(value, indent=2, sort_keys=True, default=str))
        return
    shown = rows if rows is not None else value
    if isinstance(shown, Mapping):
        print(key_values(shown))
    elif isinstance(shown, list) and all(isinstance(r, Mapping) for r in shown):
        print(table([humanize(r) for r in shown]))
    else:
        print(human(shown))


class Progress:
    """A progress bar on stderr, shown only when stderr is a terminal and there is enough to do."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, unit: str = "") -> None:
        self.stream = stream or sys.stderr
        self.total, self.label, self.done, self.unit = total, label, 0, unit
        self.enabled = self.stream.isatty() and total > 1

    def advance(self, amount: int = 1) -> None:
        self.done = min(self.total, self.done + amount)
        if self.enabled:
            bar = 30
            filled = int(bar * self.done / self.total)
            count = (
                f"{self.done // 1024} / {self.total // 1024} KiB"
                if self.unit == "bytes"
                else f"{self.done}/{self.total}"
            )
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (bar - filled)}] {count}")
            self.stream.flush()

    step = advance

    def update(self, done: int) -> None:
        """Set how much is done (an upload restarting after a retry goes back to 0)."""
        self.done = 0
        self.advance(done)

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def json_anywhere(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let `--json` follow the command too (`msmt status ID --json`), not only precede it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--json" in a.option_strings for a in sub._actions):
                    sub.add_argument(
                        "--json",
                        action="store_true",
                        default=argparse.SUPPRESS,
                        help="machine-readable JSON output",
                    )
                json_anywhere(sub)
    return parser


# --- reading files people name -----------------------------------------------------------


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the {what} {path}: {_os_reason(exc)}") from exc


def read_text(path: str | Path, what: str = "file") -> str:
    data = read_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"the {what} {path} is not UTF-8 text (byte {exc.start})") from exc


def read_toml(path: str | Path, what: str = "TOML file") -> dict[str, Any]:
    try:
        return tomllib.loads(read_text(path, what))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"the {what} {path} is not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise UserError(f"the {what} {path} is nested too deeply") from exc


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder, not a file"
    if isinstance(exc, NotADirectoryError):
        return "a part of the path is not a folder"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or str(exc)).lower()


# --- the error boundary ----------------------------------------------------------------------

Classifier = Callable[[BaseException], "tuple[str, int] | None"]


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def classify_common(exc: BaseException) -> tuple[str, int] | None:
    """Errors any command can meet, as (sentence, exit code)."""
    import httpx  # both command lines depend on it; imported late to keep start-up quick

    if isinstance(exc, UserError):
        return exc.message, exc.code
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
        where = exc.filename if exc.filename is not None else ""
        other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return f"{where}{other}: {_os_reason(exc)}" if where else _os_reason(exc), EXIT_ERROR
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"not valid TOML: {exc}", EXIT_ERROR
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", EXIT_ERROR
    if isinstance(exc, UnicodeDecodeError):
        return "a file that should be UTF-8 text is not", EXIT_ERROR
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return f"invalid URL: {one_line(str(exc))} (a URL starts with https:// or http://)", EXIT_USAGE
    if isinstance(exc, httpx.HTTPError):
        return f"HTTP request failed: {one_line(str(exc)) or type(exc).__name__}", 4
    if isinstance(exc, MsmtError):
        return f"{exc.detail} ({exc.code})", EXIT_ERROR
    return None


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def boundary(prog: str, work: Callable[[], int], classify: Classifier | None = None) -> int:
    """Run a command: known errors become one sentence on stderr and their exit code, an
    unexpected one a sentence and exit 70; MSMT_DEBUG=1 adds the traceback."""
    try:
        return work()
    except SystemExit:
        raise
    except BrokenPipeError:  # output piped into head(1) and the like
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debugging():
            traceback.print_exc()
        found = (classify(exc) if classify else None) or classify_common(exc)
        if found is None:
            print(
                f"{prog}: internal error ({type(exc).__name__}: {one_line(str(exc), 200)}); "
                f"run with {DEBUG_ENV}=1 for details",
                file=sys.stderr,
            )
            return EXIT_SOFTWARE
        message, code = found
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code
