"""Shared material for the issuer and back-office tests (not a test module itself).

Cards here compute their cryptograms the way the virtual card does (card key from the IMK,
session key from the ATC, AC over the AC input of emv.appdata), so the issuer verifies
real cryptograms; one end-to-end test also runs the real virtual card and kernel.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backoffice.engine import BackOffice
from backoffice.policy import (
    ATC_WINDOW,
    LATE_HORIZON,
    AggregationPolicy,
    BackOfficeConfig,
    RecoveryPolicy,
)
from backoffice.pricing import FlatFarePricer
from backoffice.storage import SqlStore, StorageUnavailableError, open_store, sqlite_url
from backoffice.taps import Action, TapRecord
from emv.appdata import ac_input
from emv.crypto.cryptogram import scheme
from emv.pan import mask_pan, pan_token, with_luhn_digit
from issuer.keys import KeyStore
from issuer.lifecycle import Event
from issuer.models import Card
from issuer.policy import BankPolicy, ExpiryPolicy
from issuer.service import Issuer

TOKEN_KEY = b"tapsim-test-token-key-0000000000"
KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=CST)  # a Monday morning in Beijing
AIP = bytes.fromhex("0080")
CVR = bytes.fromhex("03A00000")
MERCHANT = "tapsim-transit"
PG_DEFAULT = "postgresql://127.0.0.1:5432/test"

BANKS = (
    BankPolicy("ICBC", expiry=ExpiryPolicy.STOP, dormancy_after=timedelta(days=365)),
    BankPolicy("BOC", expiry=ExpiryPolicy.KEEP, replacement_grace=timedelta(days=30)),
)


def keystore() -> KeyStore:
    return KeyStore(KEK, {"imk1": IMK})


def new_issuer() -> Issuer:
    return Issuer(keystore(), BANKS, TOKEN_KEY)


def luhn_pan(body: str) -> str:
    """A PAN with a correct check digit (test cards are still obviously fake)."""
    return with_luhn_digit(body)


def pan_for(n: int) -> str:
    return luhn_pan(f"623190{n:012d}")


@dataclass
class TestCard:
    """The card side of a tap: PAN, keys and ATC, making real ARQCs."""

    __test__ = False  # not a pytest class

    pan: str
    scheme_name: str = "tdes"
    psn: str = "01"
    atc: int = 0
    _key: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self._key = scheme(self.scheme_name).derive_card_key(IMK, self.pan, self.psn)

    @property
    def token(self) -> str:
        return pan_token(self.pan, TOKEN_KEY)

    @property
    def masked(self) -> str:
        return mask_pan(self.pan)

    def cryptogram(self, amount: int = 0) -> tuple[int, bytes, bytes]:
        """The next (ATC, ARQC, AC input) this card produces."""
        self.atc += 1
        terminal = (
            max(amount, 0).to_bytes(6, "big") + bytes(6) + bytes.fromhex("0156") + bytes(5)
            + bytes.fromhex("0156") + bytes.fromhex("260302") + b"\x00"
            + self.atc.to_bytes(4, "big")
        )  # fmt: skip
        data = ac_input(terminal, AIP, self.atc, CVR)
        suite = scheme(self.scheme_name)
        arqc = suite.generate_ac(suite.derive_session_key(self._key, self.atc), data)
        return self.atc, arqc, data

    def tap(
        self,
        tap_id: str,
        time: datetime,
        *,
        operator: str = "bus1",
        route: str = "R1",
        stop: str = "S1",
        action: Action = Action.TAP,
        category: str = "",
    ) -> TapRecord:
        atc, arqc, data = self.cryptogram()
        return TapRecord(
            tap_id=tap_id,
            validator_id="V-" + operator,
            operator_id=operator,
            pan_token=self.token,
            masked_pan=self.masked,
            time=time,
            stop_id=stop,
            route_id=route,
            action=action,
            atc=atc,
            arqc=arqc,
            ac_data=data,
            scheme=self.scheme_name,
            rider_category=category,
            fare_media="quickpass",
        )


def open_card(
    issuer: Issuer,
    card: TestCard,
    now: datetime = T0,
    *,
    balance: int = 10_000,
    bank: str = "ICBC",
    activate: bool = True,
    expires_at: datetime | None = None,
) -> Card:
    """An account with ``balance`` and the card on it (activated unless told otherwise)."""
    account_id = "acct-" + card.token[:12]
    issuer.open_account(account_id, bank, "CNY", now - timedelta(days=30), balance)
    issued = issuer.issue_card(
        card.pan, card.psn, account_id,
        scheme=card.scheme_name, imk_id="imk1",
        expires_at=expires_at or datetime(2030, 12, 31, tzinfo=CST),
        now=now - timedelta(days=30),
    )  # fmt: skip
    if activate:
        issued = issuer.apply(card.token, Event.ACTIVATE, now - timedelta(days=30))
    return issued


def flat_pricer(**kw: object) -> FlatFarePricer:
    return FlatFarePricer(default=200, **kw)  # type: ignore[arg-type]


def config(*, late_horizon: timedelta = LATE_HORIZON, atc_window: int = ATC_WINDOW,
           **kw: object) -> BackOfficeConfig:
    """The tests' core rules: ``kw`` for the aggregation policy, the late-arrival horizon and
    the ATC window (BackOfficeConfig's defaults unless given)."""
    agg = AggregationPolicy(**kw)  # type: ignore[arg-type]
    return BackOfficeConfig(merchant_id=MERCHANT, aggregation=agg, recovery=RecoveryPolicy(),
                            late_horizon=late_horizon, atc_window=atc_window)


def core(issuer: Issuer, **kw: object) -> BackOffice:
    return BackOffice(flat_pricer(), issuer, config(**kw))


# -- storage backends ---------------------------------------------------------------------

BACKENDS = ("sqlite", "postgresql")


def pg_base_url() -> str:
    return os.environ.get("TAPSIM_PG_URL", PG_DEFAULT)


def pg_unavailable(reason: str) -> None:
    """Skip loudly where PostgreSQL is not running; in CI, fail instead."""
    message = f"PostgreSQL not reachable at {pg_base_url()} ({reason}): PostgreSQL tests NOT run"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " — CI=true requires PostgreSQL", pytrace=False)
    print(f"\n*** {message} ***", file=sys.stderr)
    pytest.skip(message)


def backend_url(backend: str, tmp_path: Path) -> tuple[str, str | None]:
    """A URL for a fresh database of ``backend`` (and the PG schema to drop afterwards)."""
    if backend == "sqlite":
        return sqlite_url(tmp_path / 'core.db'), None
    schema = "t_" + uuid.uuid4().hex[:16]
    base = pg_base_url()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}", schema


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_base_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def fresh_db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of an empty database for a process to open (SQLite: a path not created
    yet; PostgreSQL: a schema of its own, created, dropped after; skipped with the reason when
    PostgreSQL cannot be reached)."""
    url, schema = backend_url(backend, tmp_path)
    if schema is not None:
        try:
            open_store(url).close()
        except StorageUnavailableError as exc:
            pg_unavailable(str(exc))
    try:
        yield url
    finally:
        if schema is not None:
            drop_schema(schema)


def make_store(backend: str, tmp_path: Path) -> Iterator[tuple[SqlStore, str]]:
    """Yield (store, url) for a fresh database; clean up after."""
    url, schema = backend_url(backend, tmp_path)
    try:
        store = open_store(url)
    except StorageUnavailableError as exc:
        pg_unavailable(str(exc))
        raise  # pragma: no cover - pg_unavailable raises
    try:
        yield store, url
    finally:
        store.close()
        if schema is not None:
            drop_schema(schema)
