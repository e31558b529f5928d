"""The command blocks of the READMEs, parsed from their Markdown, and a shell to run them in.

``fences(path)`` finds every fenced block (```` ```lang ````) of a Markdown file;
``commands(fence)`` splits an ``sh`` block into the commands a reader would paste: one
logical line each (backslash continuations joined), comment-only lines dropped, a trailing
``&`` marking a command that runs in the background.  ``Clone`` is a temporary directory laid
out like a clone of the repository (its tracked top-level entries linked in, ``.venv`` the
running interpreter's environment, HOME and XDG_STATE_HOME inside it) in which the commands
run under bash, as the README shows them.  Background commands are started in a process group
of their own, waited for until ready, and stopped (SIGINT, as Ctrl-C) when the block ends.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Fence:
    path: Path  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str
    body: tuple[tuple[int, str], ...]  # (line number, text)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Command:
    """One command of a block, as written (``text``), and what to hand to bash (``code``)."""

    text: str  # the logical line, continuations joined with a space, comment kept
    code: str  # without the trailing comment and ``&``
    line: int
    background: bool


def readme_paths() -> list[Path]:
    """README.md and every package's README.md that git tracks (relative paths)."""
    out = subprocess.run(["git", "ls-files", "README.md", "*/README.md"], cwd=ROOT,
                         capture_output=True, text=True, check=False).stdout.split()
    found = sorted({Path(p) for p in out} | {p.relative_to(ROOT) for p in ROOT.glob(
        "*/README.md") if not p.parent.name.startswith(".")} | {Path("README.md")})
    return [p for p in found if (ROOT / p).is_file()]


def fences(path: Path) -> list[Fence]:
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    found: list[Fence] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        marker, lang, start = m.group(1), m.group(2), i + 1
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not lines[i].lstrip().startswith(marker):
            body.append((i + 1, lines[i]))
            i += 1
        found.append(Fence(path, start, lang, tuple(body)))
        i += 1
    return found


def split_comment(text: str) -> tuple[str, str]:
    """``text`` cut before its shell comment (a ``#`` starting a word outside quotes)."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i:]
    return text.rstrip(), ""


def commands(fence: Fence) -> list[Command]:
    out: list[Command] = []
    pending: list[str] = []
    first = 0
    for number, raw in fence.body:
        line = raw.rstrip()
        if not pending:
            first = number
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        code, comment = split_comment(line)
        if code.endswith("\\"):
            pending.append(code[:-1].rstrip())
            continue
        pending.append(code)
        joined = " ".join(p.strip() for p in pending)
        pending = []
        background = joined.endswith("&") and not joined.endswith("&&")
        code = joined[:-1].rstrip() if background else joined
        out.append(Command(f"{joined}  {comment}".rstrip(), code, first, background))
    return out


@dataclass
class Ran:
    """A finished foreground command, or a stopped background one."""

    command: Command
    code: str  # what bash ran
    returncode: int
    stdout: str
    stderr: str
    cwd: Path

    def describe(self) -> str:
        return (f"{self.code!r} (README line {self.command.line}) exited {self.returncode}\n"
                f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}")


@dataclass
class Service:
    command: Command
    code: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> tuple[str, str]:
        return (self.out.read_text(errors="replace"), self.err.read_text(errors="replace"))


@dataclass
class Clone:
    """A temporary working copy of the repository's layout, and the shell that runs in it."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    @classmethod
    def make(cls, root: Path, shared_state: dict[str, Path]) -> Clone:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True,
                                 text=True, check=False).stdout.split()
        for top in sorted({t.split("/", 1)[0] for t in tracked} or {
                p.name for p in ROOT.iterdir() if not p.name.startswith(".")}):
            if (ROOT / top).exists():
                (root / top).symlink_to(ROOT / top)
        (root / ".venv").symlink_to(Path(sys.prefix))
        home = root / "home"
        state = home / ".local" / "state"
        state.mkdir(parents=True)
        for rel, target in shared_state.items():  # e.g. the sim's calibration: computed once
            (state / rel).parent.mkdir(parents=True, exist_ok=True)
            (state / rel).symlink_to(target)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TAPSIM_", "XDG_", "PYTEST_", "VIRTUAL_ENV"))}
        env.update(HOME=str(home), XDG_STATE_HOME=str(state), MPLBACKEND="Agg",
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                   PYTHONUNBUFFERED="1", COLUMNS="120", TERM="dumb")
        return cls(root, env)

    def source(self, command: Command, code: str) -> Ran:
        """A ``. FILE`` line: run it and keep the environment it leaves."""
        done = subprocess.run(["bash", "-c", f"{code} && env -0"], cwd=self.root, env=self.env,
                              capture_output=True, timeout=60, check=False)
        if done.returncode == 0:
            self.env = dict(item.split("=", 1) for item in
                            done.stdout.decode().split("\0") if "=" in item)
        return Ran(command, code, done.returncode, "", done.stderr.decode(errors="replace"),
                   self.root)

    def run(self, command: Command, code: str, timeout: float) -> Ran:
        try:
            done = subprocess.run(["bash", "-c", code], cwd=self.root, env=self.env,
                                  capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{code!r} (README line {command.line}) ran past {timeout} s"
                                 f"\n{(exc.stderr or b'').decode(errors='replace')[-2000:]}"
                                 ) from None
        return Ran(command, code, done.returncode, done.stdout.decode(errors="replace"),
                   done.stderr.decode(errors="replace"), self.root)

    def start(self, command: Command, code: str) -> Service:
        n = len(self.services)
        out, err = self.root / f".service{n}.out", self.root / f".service{n}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(["bash", "-c", code], cwd=self.root, env=self.env,
                                    stdout=o, stderr=e, start_new_session=True)
        service = Service(command, code, proc, out, err)
        self.services.append(service)
        return service

    def wait_until(self, service: Service, ready: Callable[[Service], bool],
                   timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready(service):
                return
            if service.proc.poll() is not None:
                out, err = service.output()
                raise AssertionError(f"{service.code!r} (README line {service.command.line}) "
                                     f"ended before it was ready (exit {service.proc.returncode})"
                                     f"\n{out[-2000:]}\n{err[-2000:]}")
            time.sleep(0.05)
        out, err = service.output()
        raise AssertionError(f"{service.code!r} (README line {service.command.line}) not ready "
                             f"after {timeout} s\n{out[-2000:]}\n{err[-2000:]}")

    def stop_all(self) -> list[Ran]:
        """Every background command, last started first: SIGINT to its process group."""
        stopped: list[Ran] = []
        for service in reversed(self.services):
            proc = service.proc
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            out, err = service.output()
            stopped.append(Ran(service.command, service.code, proc.returncode, out, err,
                               self.root))
        self.services.clear()
        return stopped
