"""README.md's five-minute tour, run exactly as written against a real broker process.

Every ```sh and ```python block of the README runs in order (tests/e2e/readme_blocks.py says
which markers change that), in one empty folder, as a reader would in one terminal:
- a sh block runs with `bash -euo pipefail`; the variables it sets are kept for the next
  blocks (as they would be in the reader's shell), and so is its working directory;
- a python block runs as its own `python` process with that environment;
- the block that starts the broker (`msmt-broker serve ... &`) runs in its own process group,
  the test waits until the broker answers, and stops that group at the end;
- PATH starts with this virtual environment's bin folder (`source .venv/bin/activate`).
The only change made to the text: the README's port 8443 becomes a free port (other brokers
may be running), in `--port 8443` and `127.0.0.1:8443`.
So a command edited into one that fails, or a block that is silently dropped, fails the test.
A block marked `known-defect` that fails makes the test xfail with the defect and the output;
once such a block passes, the test fails until its marker is removed: a marker never hides a
defect, nor outlives it. `harness/transcript.txt` in the test's tmp_path holds what the reader
would have seen.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from .readme_blocks import Block, parse, tour
from .servers import free_port, keep_log

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent  # .venv/bin: python, msmt, msmt-broker
README_PORT = "8443"
BLOCK_TIMEOUT_S = 120
# the harness's own variables and those bash maintains itself: not the reader's environment
NOT_CARRIED = {"_", "SHLVL", "OLDPWD", "PWD"}


def localize(text: str, port: int) -> str:
    """The README's broker address, moved to the test's free port."""
    return text.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}").replace(
        f"--port {README_PORT}", f"--port {port}"
    )


@dataclass
class Tour:
    """One reader's terminal: a folder, an environment, and the broker it started."""

    folder: Path
    scratch: Path  # the harness's files, outside the reader's folder
    port: int
    env: dict[str, str]
    cwd: Path = field(init=False)
    background: list[tuple[Block, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cwd = self.folder

    def run(self, number: int, block: Block) -> subprocess.CompletedProcess[str] | None:
        text = localize(block.text, self.port)
        if block.kind == "file":
            (self.cwd / block.arg).write_text(text)
            return None
        if block.kind == "background":
            self.start(number, block, text)
            return None
        if block.lang == "python":
            script = self.scratch / f"block-{number:02d}.py"
            script.write_text(text)
            return self._run([sys.executable, str(script)])
        env_out = self.scratch / f"env-{number:02d}"
        script = self.scratch / f"block-{number:02d}.sh"
        # set -a: every variable the block sets is exported, so it is dumped and kept for the
        # next blocks, as the reader's one shell keeps it
        script.write_text(f"shopt -s inherit_errexit\nset -a\n{text}\nset +a\nenv -0 > '{env_out}'\n")
        result = self._run(["bash", "--noprofile", "--norc", "-euo", "pipefail", str(script)])
        if result.returncode == 0:
            dumped = dict(entry.split("=", 1) for entry in env_out.read_text().split("\0") if "=" in entry)
            self.cwd = Path(dumped.get("PWD", str(self.cwd)))
            self.env = {k: v for k, v in dumped.items() if k not in NOT_CARRIED}
        return result

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )

    def start(self, number: int, block: Block, text: str) -> None:
        script = self.scratch / f"block-{number:02d}.sh"
        # bash stays, ignoring SIGTERM, until what the block started in the background exits:
        # the test's SIGTERM to the group stops the server, and bash reaps it
        script.write_text(f"{text}\ntrap '' TERM\nwait\n")
        log_path = self.scratch / f"background-{number:02d}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-euo", "pipefail", str(script)],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped with everything it started
            )
        self.background.append((block, proc, log_path))
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{block.where()} exited with {proc.returncode}:\n{text}{self.server_logs()}"
                )
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{block.where()}: no broker at {base} within 30 s{self.server_logs()}")
            time.sleep(0.1)

    def stop(self) -> None:
        for _, proc, _ in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def server_logs(self) -> str:
        """What the background blocks printed, and the tail of every log file in the folder."""
        logs = [(f"{block.where()} (background)", path) for block, _, path in self.background]
        logs += [(str(path.relative_to(self.folder)), path) for path in sorted(self.folder.rglob("*.log"))]
        return "".join(f"\n--- {name}:\n{path.read_text(errors='replace')[-3000:]}" for name, path in logs)


def failure(block: Block, text: str, result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{block.where()} failed with exit {result.returncode}:\n{text}\n"
        f"--- stdout:\n{result.stdout[-3000:]}\n--- stderr:\n{result.stderr[-3000:]}"
    )


def test_readme_markers_are_understood() -> None:
    """Every marker parses, and the tour has the shape the test relies on."""
    blocks = tour(README.read_text())
    assert [b for b in blocks if b.kind == "background"], "the tour starts no broker"
    texts = [b.text for b in blocks if b.runnable]
    assert any(f"--port {README_PORT}" in t for t in texts if "msmt-broker serve" in t)
    assert any(f"127.0.0.1:{README_PORT}" in t for t in texts), "the agency never points at the broker"
    for block in blocks:
        if block.kind == "skip":
            assert block.arg, block.where()


@dataclass
class Outcome:
    executed: list[Block] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)  # known-defect blocks that still fail
    fixed: list[str] = field(default_factory=list)  # known-defect blocks that pass now
    timings: list[str] = field(default_factory=list)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tour(blocks: list[Block], tmp_path: Path) -> Outcome:
    """Run every runnable block in order, as one reader in one terminal; raise AssertionError
    at the first block that fails (unless it is marked as a known defect)."""
    folder, scratch = tmp_path / "tour", tmp_path / "harness"
    folder.mkdir(parents=True)
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSMT_", "PYTEST_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # source .venv/bin/activate
    session = Tour(folder, scratch, free_port(), env)
    outcome = Outcome()
    try:
        for number, block in enumerate(blocks, 1):
            if not block.runnable:
                continue
            began = time.monotonic()
            result = session.run(number, block)
            outcome.executed.append(block)
            outcome.timings.append(f"{time.monotonic() - began:5.1f}s  {block.where()}")
            if result is None:
                continue
            with open(scratch / "transcript.txt", "a") as transcript:  # what the reader would see
                transcript.write(f"=== {block.where()}\n{block.text}--- exit {result.returncode}\n")
                transcript.write(f"{result.stdout}{result.stderr}\n")
            text = localize(block.text, session.port)
            if block.kind == "known-defect":
                if result.returncode == 0:
                    outcome.fixed.append(f"{block.where()}: {block.arg}")
                else:
                    outcome.defects.append(f"{block.where()}: {block.arg}\n{failure(block, text, result)}")
                continue
            assert result.returncode == 0, failure(block, text, result) + session.server_logs()
    finally:
        session.stop()
        for log in sorted(folder.rglob("*.log")):  # the tour's broker log, for CI's secrets check
            keep_log(log)
    return outcome


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    for command in ("msmt", "msmt-broker"):
        assert (BIN / command).exists(), f"no {command} next to {sys.executable}: run the tests in .venv"
    started, cpu = time.monotonic(), cpu_seconds()
    blocks = tour(README.read_text())
    runnable = [b for b in blocks if b.runnable]
    outcome = run_tour(blocks, tmp_path)
    print(
        f"README tour: {len(outcome.executed)} of {len(blocks)} blocks run in "
        f"{time.monotonic() - started:.1f} s ({cpu_seconds() - cpu:.1f} s of CPU in the commands)"
    )
    print("\n".join(outcome.timings))
    assert outcome.executed == runnable, "a runnable block of the tour was not run"
    assert len(blocks) - len(runnable) == len([b for b in blocks if b.kind == "skip"])
    assert not outcome.fixed, "known-defect markers whose blocks pass now: remove them\n" + "\n".join(
        outcome.fixed
    )
    if outcome.defects:
        pytest.xfail(f"{len(outcome.defects)} known defect(s) in the tour:\n" + "\n\n".join(outcome.defects))


def test_the_harness_keeps_one_shell_and_stops_at_a_failure(tmp_path: Path) -> None:
    """Variables, exports and the working folder carry over to later blocks, python included;
    a known defect is reported, not hidden; a failing command anywhere in a block fails it."""
    markdown = (
        "```sh\nexport GREETING=hello\nname=tour\nmkdir sub && cd sub\n```\n"
        "<!-- tour: file notes.txt -->\n```text\nwritten\n```\n"
        "```python\nimport os\nfrom pathlib import Path\n\n"
        "assert (os.environ['GREETING'], os.environ['name']) == ('hello', 'tour')\n"
        "assert Path('notes.txt').read_text() == 'written\\n'\n```\n"
        "<!-- tour: known-defect (false fails) -->\n```sh\nfalse\n```\n"
        '```sh\ntest "$name" = tour && test "$(basename "$PWD")" = sub\n```\n'
    )
    outcome = run_tour(tour(markdown), tmp_path / "passing")
    assert len(outcome.executed) == 5 and not outcome.fixed
    assert len(outcome.defects) == 1 and "false fails" in outcome.defects[0]

    for failing in ("true | false\necho never", "missing-command-xyz", "echo $UNSET_VARIABLE"):
        with pytest.raises(AssertionError, match="failed with exit"):
            run_tour(tour(f"```sh\n{failing}\n```\n"), tmp_path / str(len(failing)))


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("<!-- tour: skp (typo) -->\n```sh\ntrue\n```\n", "unknown tour marker"),
        ("<!-- tour: skip -->\n```sh\ntrue\n```\n", "needs a reason"),
        ("<!-- tour: skip (why) -->\n\nsome text\n```sh\ntrue\n```\n", "right before a fenced block"),
        ("<!-- tour: background (x) -->\n```python\npass\n```\n", "only a ```sh block"),
        ("<!-- tour: setup (x)\n```sh\ntrue\n```\n", "never closed"),
        ("```sh\ntrue\n", "never closed"),
        ("```bash\ntrue\n```\n", "write ```sh, not ```bash"),
    ],
)
def test_malformed_markers_are_refused(markdown: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse(markdown)


def test_markers_and_hidden_setup() -> None:
    markdown = (
        "<!-- tour: skip (make test takes minutes) -->\n```sh\nmake test\n```\n"
        "```\nlayout/\n```\n"
        "<!-- tour: setup (the other founders, played by the test)\n```sh\necho hidden\n```\n-->\n"
        "<!-- tour: file members.toml -->\n```toml\n[members]\n```\n"
        "```python\nprint(1)\n```\n"
    )
    blocks = parse(markdown)
    assert [(b.lang, b.kind, b.hidden) for b in blocks] == [
        ("sh", "skip", False),
        ("", "doc", False),
        ("sh", "run", True),
        ("toml", "file", False),
        ("python", "run", False),
    ]
    assert blocks[0].arg == "make test takes minutes"
    assert blocks[3].arg == "members.toml" and blocks[3].text == "[members]\n"
    assert [b.line for b in tour(markdown)] == [2, 9, 14, 17]
