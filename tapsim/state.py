"""Where the command line keeps what outlives one run: virtual cards' counters and the
demo validators' TEST PSAM state.

A card's state file is the card: `tapsim tap`, `tapsim terminal run` and `tapsim card
serve` of the same card read and write the same file (under
``$XDG_STATE_HOME/tapsim/cards/``), so its ATC only ever goes up, as on a real chip, and
the back office never sees a counter twice.  Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from emv.card.state import CardState
from emv.epurse.psam import TEST_PURCHASE_KEYS, Psam
from tapsim.errors import UserError


def state_dir() -> Path:
    """``$XDG_STATE_HOME/tapsim/cards`` (default ``~/.local/state/tapsim/cards``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tapsim" / "cards"


def card_state_path(card: str) -> Path:
    """The state file of a built-in card name or a profile path."""
    return state_dir() / f"{Path(card).stem}.json"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:  # on disk before the rename: a card's counters never go back
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_card_state(path: Path | None) -> CardState | None:
    """A saved card state, or None for a newly personalised card."""
    if path is None or not path.exists():
        return None
    try:
        return CardState.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a card state file ({exc})") from None


def save_card_state(state: CardState, path: Path) -> None:
    _write(path, json.dumps(state.to_dict(), indent=1))


def load_psam(path: Path | None) -> Psam:
    """The TEST PSAM with its serial and pending purchases from last time."""
    if path is None or not path.exists():
        return Psam.test()
    try:
        from emv.epurse.issuers import TEST_ISSUERS  # noqa: PLC0415 - next to the PSAM's keys

        return Psam.from_dict(json.loads(path.read_text()), TEST_PURCHASE_KEYS,
                              TEST_ISSUERS.purchase_keys())
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: not a PSAM state file ({exc})") from None


def save_psam(psam: Psam, path: Path) -> None:
    _write(path, json.dumps(psam.to_dict(), indent=1))
