"""msmt-verify as a distribution of its own (clients/verify/pyproject.toml).

The wheel is built the way a packager builds it (`pip wheel ./clients/verify`, from a copy of
`clients/` so the repository stays clean), then installed by pip, with its dependencies resolved
by pip, into a fresh virtual environment that holds nothing else: no index (`--no-index`), and
the only distributions on the new interpreter's path are cryptography and what it needs (cffi,
pycparser), linked in from this test's environment. So pip itself proves that the wheel's
dependencies are exactly those: with any other requirement (httpx, PyJWT, msmt-client) the
install would fail. In that environment `msmt-verify` verifies a published bundle and rejects
an altered one, and neither `msmt` nor the client's network libraries can be imported.

The wheel's modules are the very files the client ships (msmt/verify.py and msmt/core/): one
source, checked byte for byte.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "clients"
VECTORS = ROOT / "tests" / "vectors" / "report-v1"
VALID = VECTORS / "valid" / "all.json"
QUORUM = VECTORS / "valid" / "quorum.json"
PIN = json.loads((ROOT / "tests" / "vectors" / "directory-v1" / "fingerprint.json").read_text())[
    "fingerprint"
]
SENTENCE = (
    "endorsed by KOR, USA, JPN on 2026-11-30; reservations: JPN: Japan does not associate itself "
    "with finding 4 (the broker in a third country)."
)
# What cryptography needs at run time on CPython: cffi (its C bindings) and cffi's pycparser.
RUNTIME = ("cryptography", "cffi", "pycparser")
TIMEOUT = 180


def _run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [str(a) for a in argv], capture_output=True, text=True, timeout=TIMEOUT, check=False, **kwargs
    )


def _clean_env() -> dict[str, str]:
    """The environment without anything that would add this repository or this venv to a path."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"}
    return {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONNOUSERSITE": "1"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(CLIENTS / "msmt", src / "msmt", ignore=ignore)
    shutil.copytree(CLIENTS / "verify", src / "verify", ignore=ignore)
    out = tmp_path_factory.mktemp("wheels")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, src / "verify")
    assert built.returncode == 0, built.stdout + built.stderr
    (whl,) = out.glob("msmt_verify-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no pip, no system site-packages) where pip installed the wheel offline; its
    only other distributions are cryptography, cffi and pycparser. Returns the venv's bin/."""
    base = tmp_path_factory.mktemp("venv")
    venv = base / "v"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    deps = base / "deps"
    deps.mkdir()
    for name in RUNTIME:
        dist = importlib.metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or ()} - {"..", "__pycache__"}
        for top in tops:
            (deps / top).symlink_to(Path(str(dist.locate_file(top))))
    (site / "runtime-deps.pth").write_text(f"{deps}\n")
    pip = (sys.executable, "-m", "pip", "--python", python)
    done = _run(*pip, "install", "--no-index", "--find-links", wheel.parent, "--quiet", "msmt-verify")
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def test_the_wheel_requires_only_cryptography_and_owns_the_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(info).decode())
        entry_points = zf.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert meta["Name"] == "msmt-verify"
    requires = meta.get_all("Requires-Dist") or []
    assert [re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in requires] == ["cryptography"], requires
    assert "msmt-verify = msmt_verify.verify:main" in entry_points
    modules = sorted(n for n in names if not n.split("/")[0].endswith(".dist-info"))
    assert all(n.startswith("msmt_verify/") for n in modules), modules
    # the verifier and the pure core, nothing of the client's HTTP, CLI or gateway
    core = sorted(f"msmt_verify/core/{p.name}" for p in (CLIENTS / "msmt" / "core").glob("*.py"))
    assert modules == sorted(["msmt_verify/__init__.py", "msmt_verify/verify.py", *core])


def test_the_wheel_is_built_from_the_clients_own_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith("msmt_verify/"):
                source = CLIENTS / "msmt" / name.removeprefix("msmt_verify/")
                assert zf.read(name) == source.read_bytes(), name


def test_pip_installs_it_with_cryptography_alone(installed: Path) -> None:
    pip = (sys.executable, "-m", "pip", "--python", installed / "python")
    listed = _run(*pip, "list", "--format=json")
    assert listed.returncode == 0, listed.stderr
    assert {d["name"].lower() for d in json.loads(listed.stdout)} == {"msmt-verify", *RUNTIME}
    checked = _run(*pip, "check")
    assert checked.returncode == 0 and "No broken requirements" in checked.stdout, checked.stdout


def test_msmt_verify_verifies_a_bundle_in_that_environment(installed: Path, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    ok = _run(
        installed / "msmt-verify",
        VALID,
        "--root-fingerprint",
        PIN,
        "--html",
        page,
        cwd=tmp_path,
        env=_clean_env(),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[0] == f"VERIFIED: {SENTENCE}"
    assert "pip install msmt-verify" in page.read_text(encoding="utf-8")
    quorum = _run(installed / "msmt-verify", QUORUM, "--json", cwd=tmp_path, env=_clean_env())
    assert quorum.returncode == 0 and json.loads(quorum.stdout)["valid"] is True, (
        quorum.stdout + quorum.stderr
    )
    altered = tmp_path / "altered.json"
    altered.write_bytes(VALID.read_bytes().replace(b"finding 4", b"finding 5", 1))
    bad = _run(installed / "msmt-verify", altered, "--root-fingerprint", PIN, cwd=tmp_path, env=_clean_env())
    assert bad.returncode == 1 and bad.stdout.startswith("REJECTED: "), bad.stdout + bad.stderr


RUNNER = """
import importlib.util, sys
BEFORE = set(sys.modules)
from msmt_verify import verify
code = verify.main(sys.argv[1:])
new = {m.split(".")[0] for m in set(sys.modules) - BEFORE}
print("MODULES", *sorted(new - set(sys.stdlib_module_names)))
print("ABSENT", *[m for m in ("msmt", "httpx", "jwt", "broker", "stix2") if importlib.util.find_spec(m) is None])
raise SystemExit(code)
"""


def test_nothing_but_the_verifier_and_cryptography_is_loaded(installed: Path, tmp_path: Path) -> None:
    result = _run(
        installed / "python", "-c", RUNNER, VALID, "--root-fingerprint", PIN, cwd=tmp_path, env=_clean_env()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"VERIFIED: {SENTENCE}"
    modules = set(lines[-2].split()[1:])
    # _openssl and _rust are cryptography's own compiled modules, registered under those names
    allowed = {"msmt_verify", "cryptography", "_cffi_backend", "_openssl", "_rust"}
    assert modules <= allowed and "msmt_verify" in modules, modules
    assert lines[-1].split()[1:] == ["msmt", "httpx", "jwt", "broker", "stix2"]
