"""The package boundaries of DESIGN.md ("The parts"), checked on every import statement in the
sources (module level and inside functions), so that a shortcut across a boundary fails here
and not in review.  The packages DESIGN.md does not list yet are added with the rule their
README gives: ``clearing`` (its core imports only ``emv``; ``clearing.store`` adapts the back
office's store), ``isolink`` (the ISO 8583 dialect: ``emv`` for field 55), ``issuerhost`` (the
issuer as a network host: ``isolink``, ``issuer``, the back office's store it shares),
``replay`` (``tapsim backoffice replay``: cards tapped on the validator's kernel, the records fed
to the core; where the card side and the core meet, so neither holds it); the back office may
import ``isolink`` from its acquirer adapter only (``backoffice/acquirer/``: the bank over
ISO 8583)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"emv", "fare", "issuer", "backoffice", "terminal", "wire", "sim", "tapsim", "clearing",
        "isolink", "issuerhost", "replay"}
MAY_IMPORT: dict[str, set[str]] = {
    "emv": set(),
    "fare": set(),
    "wire": set(),
    "issuer": {"emv"},
    "backoffice": {"fare", "issuer", "emv", "wire", "isolink"},
    "terminal": {"emv", "fare", "wire"},
    "clearing": {"emv", "backoffice"},
    "isolink": {"emv"},
    "issuerhost": {"isolink", "issuer", "emv", "backoffice"},
    "replay": {"emv", "fare", "issuer", "backoffice"},
    "sim": OURS - {"sim", "tapsim"},
}
# Narrower than the package rule: the module of a package that alone may cross to another.
ONLY_IN: dict[tuple[str, str], set[str]] = {
    ("clearing", "backoffice"): {"clearing/store.py"},
    ("issuerhost", "backoffice"): {"issuerhost/host.py"},
    ("backoffice", "isolink"): {"backoffice/acquirer/mapping.py", "backoffice/acquirer/link.py",
                                "backoffice/acquirer/journal.py",
                                "backoffice/acquirer/gateway.py"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tapsim" and [a.name for a in node.names] == ["__version__"]:
                continue  # the distribution's version (a cache key), not the command line
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_what_the_design_allows(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for other in sorted(imports_of(path) - {package}):
            if other not in MAY_IMPORT[package]:
                wrong.append(f"{rel} imports {other}")
            elif rel not in ONLY_IN.get((package, other), {rel}):
                wrong.append(f"{rel} imports {other} (only {ONLY_IN[(package, other)]} may)")
    assert not wrong, "\n".join(wrong)


def test_terminal_and_backoffice_never_import_each_other() -> None:
    assert "backoffice" not in MAY_IMPORT["terminal"]
    assert "terminal" not in MAY_IMPORT["backoffice"]
    for a, b in (("terminal", "backoffice"), ("backoffice", "terminal")):
        assert not [p for p in (ROOT / a).rglob("*.py") if b in imports_of(p)]
