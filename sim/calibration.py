"""The start-up calibration of tap latency from the real kernel, kept for reuse.

Card classes are the population's card kinds (``sim.population.KINDS``), each made from a
built-in card profile, plus each kind with a past expiry date (the kernel declines those
itself).  For each class ``samples`` real taps are run and timed (``sim.latency``).

Host CPU times differ from run to run by a few microseconds; a simulation whose clock
depended on them would never repeat itself.  So a calibration is stored (JSON, host times
in nanoseconds) under ``$XDG_STATE_HOME/tapsim/sim/`` keyed by everything it depends on
(tapsim version, the kernel's and cards' source, the profiles, the date, the sample count);
later runs reuse it and the same seed gives the same results.  ``--recalibrate`` measures
again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import emv
from emv.card.profile import CardProfile, ProfileError, builtin_names, load_profile
from emv.epurse.psam import Psam
from emv.kernel import Outcome
from sim.errors import ConfigError
from sim.latency import (
    ClassCalibration,
    calibrate_class,
    card_profile,
    has_epurse,
    terminal_config,
)
from sim.population import KIND_PROFILE, KINDS

FALLBACK_PROFILE = "sscard3"
VERSION = 2


@dataclass(frozen=True, slots=True)
class Calibration:
    classes: dict[str, ClassCalibration]
    profiles: dict[str, CardProfile]  # by card kind
    source: str  # "measured" or "cached"
    path: str | None
    created: str
    notes: tuple[str, ...] = ()


def class_profiles() -> tuple[dict[str, CardProfile], tuple[str, ...]]:
    """The built-in profile of each card kind (and a note where one had to stand in)."""
    names = set(builtin_names())
    out: dict[str, CardProfile] = {}
    notes: list[str] = []
    for kind in KINDS:
        name = KIND_PROFILE[kind]
        if name not in names:
            notes.append(f"{kind}: profile {name!r} is not built in; {FALLBACK_PROFILE!r} "
                         "stands in")
            name = FALLBACK_PROFILE
        try:
            out[kind] = load_profile(name)
        except ProfileError as exc:
            raise ConfigError(f"card class {kind}: {exc}") from None
    return out, tuple(notes)


def _source_hash() -> str:
    """Hash of the code a calibration measured: the emv package's Python files."""
    root = Path(emv.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tapsim" / "sim"


def _key(profiles: dict[str, CardProfile], day: dt.date, samples: int, amount: int) -> str:
    from tapsim import __version__  # noqa: PLC0415 - only for the cache key

    h = hashlib.sha256()
    h.update(f"v{VERSION}|{__version__}|{_source_hash()}|{day}|{samples}|{amount}".encode())
    for kind in sorted(profiles):
        h.update(f"|{kind}={profiles[kind]!r}".encode())
    return h.hexdigest()[:24]


def _measure(profiles: dict[str, CardProfile], day: dt.date, samples: int, amount: int,
             token_key: bytes) -> dict[str, ClassCalibration]:
    """Every class: each kind, expired, and (kinds with a T-Union purse) an e-purse purchase
    and a purse too short for the fare (the kernel falls back to QuickPass)."""
    quickpass = terminal_config(token_key)
    epurse = terminal_config(token_key, epurse=True)
    out: dict[str, ClassCalibration] = {}
    for kind, p in profiles.items():
        out[kind] = calibrate_class(kind, p, quickpass, day, samples, amount)
        expired = card_profile(p, p.pan, expiry=day - dt.timedelta(days=1))
        out[f"{kind}/expired"] = calibrate_class(f"{kind}/expired", expired, quickpass, day,
                                                 samples, amount)
        if has_epurse(p):
            for name, balance in (("epurse", 100 * amount), ("epurse-short", 0)):
                out[f"{kind}/{name}"] = calibrate_class(
                    f"{kind}/{name}", p, epurse, day, samples, amount, psam=Psam.test(),
                    epurse_balance=balance)
    return out


def _to_json(cal: dict[str, ClassCalibration], created: str) -> str:
    return json.dumps({
        "version": VERSION, "created": created,
        "classes": {name: {
            "host_ns": [round(float(s) * 1e9) for s in c.host_seconds],
            "outcome": c.outcome.value, "reason": c.reason, "oda": c.oda,
            "commands": c.commands, "wire_bytes": c.wire_bytes, "cid": c.cid,
            "cryptogram": c.cryptogram, "epurse": c.epurse,
        } for name, c in cal.items()},
    }, indent=1)


def _from_json(text: str) -> tuple[dict[str, ClassCalibration], str]:
    data = json.loads(text)
    if data.get("version") != VERSION:
        raise ValueError("calibration file of another version")
    out = {}
    for name, c in data["classes"].items():
        out[name] = ClassCalibration(
            name=name, host_seconds=np.array(c["host_ns"], dtype=np.int64) / 1e9,
            outcome=Outcome(c["outcome"]), reason=c["reason"], oda=c["oda"],
            commands=int(c["commands"]), wire_bytes=int(c["wire_bytes"]), cid=c["cid"],
            cryptogram=bool(c["cryptogram"]), epurse=bool(c["epurse"]),
        )
    return out, str(data["created"])


def calibrate(day: dt.date, samples: int, amount: int, token_key: bytes, *,
              recalibrate: bool = False, directory: Path | None = None) -> Calibration:
    """The calibration for these settings: from the cache, or measured now (then cached)."""
    profiles, notes = class_profiles()
    folder = directory if directory is not None else cache_dir()
    path = folder / f"calibration-{_key(profiles, day, samples, amount)}.json"
    if not recalibrate and path.exists():
        try:
            classes, created = _from_json(path.read_text())
            return Calibration(classes, profiles, "cached", str(path), created, notes)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable or stale: measure again and overwrite
    classes = _measure(profiles, day, samples, amount, token_key)
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    text = _to_json(classes, created)
    classes, _ = _from_json(text)  # the stored precision, so this run equals later ones
    stored: str | None = str(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    except OSError:
        stored = None  # a read-only home: the run is still fine, just not repeatable
    return Calibration(classes, profiles, "measured", stored, created, notes)
