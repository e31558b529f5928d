"""The lock file and the benchmark comparison that ./dev relies on.

A fresh machine installs exactly requirements.lock; these tests make sure the lock covers what
pyproject.toml asks for, that the lock pins every package with hashes (pip --require-hashes
refuses anything else), that leaving out pyscard keeps a valid file, and that ./dev bench's
comparison flags a slower run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


lockfile = _load(ROOT / "scripts" / "lockfile.py")
compare = _load(ROOT / "benchmarks" / "compare.py")


def test_pyproject_and_lock_agree() -> None:
    problems = lockfile.check(ROOT / "pyproject.toml", ROOT / "requirements.lock")
    assert problems == [], "run ./dev upgrade:\n" + "\n".join(problems)


def test_every_locked_package_is_pinned_with_hashes() -> None:
    header, blocks = lockfile.read_lock(ROOT / "requirements.lock")
    assert "--index-url" not in header and "--find-links" not in header, \
        "the lock must not name a machine's own package index"
    assert len(blocks) > 20
    for block in blocks:
        assert "--hash=sha256:" in block.text, block.name
    names = {b.name for b in blocks}
    # the build requirements are locked too (./dev builds without isolation)
    assert {"setuptools", "mypy", "msgspec", "pyscard", "pip-tools"} <= names


def test_check_names_a_missing_and_an_outdated_dependency(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[build-system]\nrequires = ["setuptools>=1"]\n'
        '[project]\nname = "x"\nversion = "0"\n'
        'dependencies = ["numpy>=99", "not-a-locked-thing", "tomli; python_version < \'3.0\'"]\n'
        '[project.optional-dependencies]\ndev = ["pytest>=1"]\n', encoding="utf-8")
    problems = lockfile.check(pyproject, ROOT / "requirements.lock")
    assert len(problems) == 2, problems
    assert any("numpy>=99" in p and "pins numpy==" in p for p in problems)
    assert any("not-a-locked-thing" in p and "is not in requirements.lock" in p for p in problems)


def test_select_leaves_out_a_whole_block() -> None:
    text = lockfile.select(ROOT / "requirements.lock", {"PyScard"})
    assert "pyscard==" not in text
    full = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pyscard = next(b for b in lockfile.read_lock(ROOT / "requirements.lock")[1]
                   if b.name == "pyscard")
    assert len(text) == len(full) - len(pyscard.text)


def test_the_check_command_exits_1_and_says_what_to_run(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[build-system]\nrequires = []\n[project]\nname = "x"\n'
                         'version = "0"\ndependencies = ["numpy>=99"]\n', encoding="utf-8")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "lockfile.py"), "check",
                          str(pyproject), str(ROOT / "requirements.lock")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert "numpy>=99" in out.stderr and "./dev upgrade" in out.stderr


def _run(path: Path, medians: dict[str, float]) -> None:
    path.write_text(json.dumps({"benchmarks": [
        {"fullname": name, "stats": {"median": m}} for name, m in medians.items()]}))


@pytest.mark.parametrize(("now", "code"), [(1.2, 0), (1.3, 1), (0.5, 0)])
def test_bench_compare_flags_a_regression_beyond_25_percent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], now: float, code: int) -> None:
    before, after = tmp_path / "a.json", tmp_path / "b.json"
    _run(before, {"benchmarks/x.py::test_a": 1.0, "benchmarks/x.py::test_gone": 1.0})
    _run(after, {"benchmarks/x.py::test_a": now, "benchmarks/x.py::test_new": 2.0})
    assert compare.main([str(before), str(after)]) == code
    out = capsys.readouterr().out
    assert f"{now:.2f}" in out and "(new)" in out
    assert ("SLOWER" in out) == (code == 1)


@pytest.mark.slow
def test_the_wheel_holds_the_packages_only_and_builds_without_warnings(tmp_path: Path) -> None:
    """A demo run leaves sim-report/ in the checkout: it must not end up in the wheel, and the
    build must not warn (pyproject's license and package list are what setuptools expects).
    Built pure Python (TAPSIM_PURE_PYTHON=1): the same package list, without minutes of mypyc."""
    import os
    import zipfile

    (ROOT / "sim-report").mkdir(exist_ok=True)
    stray = ROOT / "sim-report" / "report.json"
    made = not stray.exists()
    if made:
        stray.write_text("{}", encoding="utf-8")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--no-cache-dir", "-w", str(tmp_path), str(ROOT)],
            capture_output=True, text=True, check=False, timeout=300,
            env={**os.environ, "TAPSIM_PURE_PYTHON": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    finally:
        if made:
            stray.unlink()
    assert out.returncode == 0, out.stdout + out.stderr
    log = out.stdout + out.stderr
    warnings = [line for line in log.splitlines()
                if "warning" in line.lower() and "Location 'file:" not in line]
    assert warnings == [], "\n".join(warnings)
    (wheel,) = tmp_path.glob("tapsim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"backoffice", "clearing", "emv", "fare", "isolink", "issuer", "issuerhost",
                    "replay", "sim", "tapsim", "terminal", "wire", "tapsim-0.1.0.dist-info"}, tops
    assert "replay/README.md" in names and "backoffice/consumer/loop.py" in names
    assert "isolink/dialect.json" in names  # the ISO 8583 dialect tapsim issuer run reads
    assert "fare/samples/city/fare_leg_rules.txt" in names  # the data the samples need
    assert "sim/cities/lanshan/city.toml" in names
    assert not [n for n in names if "/tests/" in n or n.endswith((".db", ".so"))]
