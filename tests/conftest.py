"""Test-wide settings.

Under CI (``CI=true``) hypothesis runs derandomized: the same examples every run,
so a red CI always means a change broke something, never that a new random
example was drawn.  Locally it explores freely (and keeps its example database).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

# Real services (Mosquitto, pcscd + vpcd) as fixtures, shared by every test file.
pytest_plugins = ["tests.fixtures.mosquitto", "tests.fixtures.netproxy", "tests.fixtures.pcsc"]


@pytest.fixture(autouse=True)
def _private_state_home(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and the processes it starts) keeps card and validator state in a
    directory of its own, never in the user's ~/.local/state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
