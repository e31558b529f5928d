"""requirements.lock, read as data: what ./dev installs and what the tests check against pyproject.

The lock is pip-compile's output (``./dev upgrade`` writes it): one block per package, a pinned
``name==version`` line, its ``--hash`` lines and ``# via`` comments.  Two jobs need it as data:

- ``select``: ./dev installs the whole lock with ``--require-hashes``, except on a machine without
  the PC/SC headers, where pyscard (the ``pcsc`` extra, built from source) cannot build; pip needs
  the hash-checked file without that block, so this prints the lock minus the named packages.
- ``check``: fails (exit 1, one line per problem) when pyproject.toml and the lock disagree: a
  dependency (runtime, an extra, or a build requirement) that the lock lacks or pins outside its
  range.  A test runs it, so a pyproject edit without ``./dev upgrade`` is caught before CI.

Standard library only (plus ``packaging``, which pip vendors and the venv has), since ./dev runs it
before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


@dataclass(frozen=True)
class Block:
    name: str  # normalised (PEP 503)
    version: str
    text: str  # the block's lines, pin, hashes and comments


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> tuple[str, list[Block]]:
    """The lock's header (lines before the first pin) and its blocks, in file order."""
    header: list[str] = []
    blocks: list[Block] = []
    current: list[str] = []
    pin: tuple[str, str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        match = _PIN.match(line)
        if match:
            if pin is not None:
                blocks.append(Block(normalise(pin[0]), pin[1], "".join(current)))
            pin, current = (match.group(1), match.group(2)), [line]
        elif pin is None:
            header.append(line)
        else:
            current.append(line)
    if pin is not None:
        blocks.append(Block(normalise(pin[0]), pin[1], "".join(current)))
    return "".join(header), blocks


def select(lock: Path, without: set[str]) -> str:
    """The lock minus the blocks of the named packages."""
    header, blocks = read_lock(lock)
    drop = {normalise(n) for n in without}
    return header + "".join(b.text for b in blocks if b.name not in drop)


def requirements(pyproject: Path) -> list[tuple[str, str]]:
    """Every requirement pyproject.toml states, with where it stands."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    found = [(r, "build-system.requires") for r in data["build-system"]["requires"]]
    project = data["project"]
    found += [(r, "project.dependencies") for r in project.get("dependencies", [])]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        found += [(r, f"optional-dependencies.{extra}") for r in reqs]
    return found


def check(pyproject: Path, lock: Path) -> list[str]:
    """Disagreements between pyproject.toml and the lock, as readable lines (none: they agree)."""
    from packaging.requirements import Requirement  # noqa: PLC0415 - only the check needs it

    pins = {b.name: b.version for b in read_lock(lock)[1]}
    problems: list[str] = []
    for text, where in requirements(pyproject):
        req = Requirement(text)
        name = normalise(req.name)
        if req.marker is not None and not req.marker.evaluate():
            continue
        if name not in pins:
            problems.append(f"{where}: {text!r} is not in {lock.name}")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{where}: {text!r} but {lock.name} pins {name}=={pins[name]}")
    return problems


def main(argv: list[str]) -> int:
    usage = "usage: lockfile.py check PYPROJECT LOCK | select LOCK [WITHOUT ...]"
    if len(argv) >= 2 and argv[0] == "select":
        sys.stdout.write(select(Path(argv[1]), set(argv[2:])))
        return 0
    if len(argv) == 3 and argv[0] == "check":
        problems = check(Path(argv[1]), Path(argv[2]))
        for line in problems:
            print(f"lock out of date: {line}", file=sys.stderr)
        if problems:
            print("run ./dev upgrade to refresh requirements.lock", file=sys.stderr)
        return 1 if problems else 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
