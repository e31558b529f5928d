"""The real transaction core behind the simulation's seam (``sim.coreapi.SimCore``).

Each shard gets its own in-memory core: ``backoffice.engine.BackOffice`` (deferred
authorization, aggregation, deny list, debt recovery, double-entry ledger), the in-process
``issuer.service.Issuer`` (accounts, card lifecycle, ARQC verification, holds, captures), and
the fare engine (``fare.engine.price_tap`` over the city's GTFS-Fares v2 tables) through
the back office's own adapter, ``backoffice.fare_pricer.FarePricer``.  Nothing here decides
a fare or an authorization; it translates.

The back office's change rows are drained after every call and not kept: a simulated day
needs the decisions, not a database (the durable stores are the core's own concern and
benchmark).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from backoffice.engine import BackOffice
from backoffice.fare_pricer import FarePricer
from backoffice.ledger import FIRST_RIDE_LOSS, ISSUER_SETTLEMENT, RECEIVABLE
from backoffice.outcomes import BatchResult
from backoffice.policy import BackOfficeConfig
from backoffice.pricing import FlatFarePricer, Pricer
from backoffice.taps import Action, TapRecord
from emv.card.profile import CardProfile
from fare.engine import price_tap
from fare.errors import FeedError, TapError
from fare.gtfs import parse_feed
from fare.model import Feed, TapAction
from fare.model import Tap as FareTap
from issuer.codes import DESCRIPTIONS, ResponseCode
from issuer.keys import KeyStore
from issuer.lifecycle import Event
from issuer.policy import BankPolicy
from issuer.service import Issuer
from sim.city import City
from sim.config import SimConfig
from sim.coreapi import CoreReply, EpurseQuote, SimCard, SimTap
from sim.errors import CityError, ConfigError

TEST_KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")  # TEST key-encryption key
ACTIONS = {"tap": Action.TAP, "tap_on": Action.TAP_ON, "tap_off": Action.TAP_OFF}
BANKS = {"ss-sm": "social-security-bank", "ss-rsa": "social-security-bank",
         "bank": "union-bank"}
FUNDED = 50_000  # fen on an ordinary account
SHORT = 150  # fen on an account that cannot pay a day of fares
DORMANT_SINCE = dt.timedelta(days=4 * 365)
# Taps: build (and drop) the storage rows past this many.  Until then each accepted tap is
# held with the fare engine's charge it was priced by (its explanation is made when its row
# is, backoffice.records.PricedTap): 425 bytes a tap more with the legs and transfer steps
# it keeps alive (the core benchmark's city week, tracemalloc), so the rows are built every
# 200,000 taps, not 2,000,000: the same work in all (linear in taps), and a peak far below
# the 2,000,000 taps (some 390 bytes each) held before.
DRAIN_AFTER = 200_000
NEAR_LIMIT = 1_000  # fen: an aggregate this close to its spend limit may close on the next tap


# A tap record is built for every accepted tap: filled slot by slot, as
# ``backoffice.fare_pricer`` builds the engine's taps, since the frozen dataclass's generated
# ``__init__`` costs twice as much (TapRecord has no checks of its own to skip).
_new_record = object.__new__
_RECORD_SETTERS = tuple(getattr(TapRecord, f.name).__set__ for f in dataclasses.fields(TapRecord))
(_set_tap_id, _set_validator, _set_operator, _set_token, _set_masked, _set_time, _set_stop,
 _set_route, _set_action, _set_atc, _set_arqc, _set_ac_data, _set_scheme, _set_category,
 _set_media) = _RECORD_SETTERS
_ON_OFF: dict[str, TapAction] = {"tap": "on", "tap_on": "on", "tap_off": "off"}


def fare_feed(city: City) -> Feed | None:
    """The city's GTFS-Fares v2 tables, when it has them."""
    if "fare_products.txt" not in city.gtfs_files:
        return None
    try:
        return parse_feed(city.gtfs_files, city.name)
    except FeedError as exc:
        raise CityError(city.source, f"fare tables: {exc}") from None


def pricing(city: City, cfg: SimConfig, feed: Feed | None) -> dict[str, object]:
    """How the run prices rides, for the report; refuses what would price them by surprise.

    A city with GTFS-Fares v2 tables is priced by them, and ``--flat-fare`` is refused (one
    price per run).  A city without them is refused unless ``cfg.flat_fare`` names the flat
    fare to charge: every boarding (QuickPass or e-purse) that much, tap-offs nothing, no
    discounts or caps.  Checked before the run starts, so a wrong feed costs no simulation.
    ``feed``: the city's :func:`fare_feed` (parsed once by the caller).
    """
    if feed is not None:
        if cfg.flat_fare is not None:
            raise ConfigError(f"--flat-fare: {city.source} has its own fare tables "
                              "(fare_products.txt), which price the run")
        return {"source": "fare tables", "currency": feed.currency,
                "statement": f"the feed's GTFS-Fares v2 tables (fare products: "
                             f"{', '.join(sorted(feed.fare_products))}), priced by "
                             f"fare.engine, in {feed.currency}"}
    if cfg.flat_fare is None:
        raise CityError(city.source, "has no fare tables (no fare_products.txt): pass "
                                     "--flat-fare FEN to price every boarding at one flat "
                                     "fare in CNY fen (e.g. --flat-fare 200 for 2.00 CNY)")
    return {"source": "flat fare", "currency": "CNY", "flat_fare": cfg.flat_fare,
            "statement": f"a flat {cfg.flat_fare / 100:.2f} CNY per boarding (--flat-fare "
                         f"{cfg.flat_fare}): the feed has no fare tables; no discounts, "
                         "transfers or caps"}


def tap_off_routes(city: City, feed: Feed | None) -> frozenset[str]:
    """Routes whose fare depends on where the rider gets off (riders tap off there);
    ``feed``: the city's :func:`fare_feed`."""
    if feed is None:
        return frozenset()
    by_net: set[str | None] = {r.network_id for r in feed.leg_rules
                               if r.to_area_id or r.to_timeframe_group_id}
    return frozenset(rid for rid, route in feed.routes.items() if rid in city.routes
                     and route.network_id in by_net)


class RealCore:
    """One shard's back office + issuer + fare engine."""

    def __init__(self, city: City, cfg: SimConfig, shard: int, token_key: bytes,
                 profiles: dict[str, CardProfile]) -> None:
        feed = fare_feed(city)
        self.feed = feed
        if feed is not None:
            # The back office's own adapter over the fare engine.  Riders' categories and
            # media come from the population, not the feed: labels the feed does not list
            # price as the engine's defaults.
            self.pricer: Pricer = FarePricer(feed, strict_labels=False)
        else:  # a feed without fare tables: the flat fare the user chose (see ``pricing``)
            if cfg.flat_fare is None:
                raise CityError(city.source, "has no fare tables and no flat fare was given")
            # (a frozen dataclass: its read-only ``currency`` is all the core reads)
            self.pricer = cast(Pricer, FlatFarePricer(default=cfg.flat_fare))
        self.flat_fare = cfg.flat_fare
        imks = {f"imk-{kind}": p.crypto.issuer_master_key for kind, p in profiles.items()}
        self.issuer = Issuer(KeyStore(TEST_KEK, imks), [BankPolicy(b) for b in
                                                         sorted(set(BANKS.values()))], token_key)
        self.core = BackOffice(self.pricer, self.issuer,
                               BackOfficeConfig(merchant_id=cfg.operator_id))
        self.operator = cfg.operator_id
        self.shard = shard
        self._accounts: dict[int, str] = {}
        self._fares: dict[int, object] = {}
        self._undrained = 0
        self._limit = self.core.config.aggregation.spend_limit - NEAR_LIMIT

    # --- cards -----------------------------------------------------------------------------

    def issue(self, card: SimCard, now: dt.datetime) -> bytes:
        account = f"acct-{self.shard}-{card.index}"
        opened = now - DORMANT_SINCE if card.state == "dormant" else now - dt.timedelta(days=30)
        balance = SHORT if card.state == "insufficient_funds" else FUNDED
        self.issuer.open_account(account, BANKS[card.kind], "CNY", opened, balance=balance)
        expires = dt.datetime.combine(card.expiry, dt.time(23, 59, 59), tzinfo=now.tzinfo)
        issued = min(opened, expires - dt.timedelta(days=1))
        issued_card = self.issuer.issue_card(card.pan, card.psn, account, scheme=card.scheme,
                                             imk_id=f"imk-{card.kind}", expires_at=expires,
                                             now=issued)
        if card.state != "not_activated":
            self.issuer.apply(card.token, Event.ACTIVATE, issued)
        if card.state == "lost":
            self.issuer.apply(card.token, Event.REPORT_LOST, now - dt.timedelta(days=1))
        self._accounts[card.index] = account
        # The key the issuer derived from its master key is the one personalisation loads
        # into the card (the bureau works from the same IMK); handing it over spares the
        # simulation deriving it twice.
        return self.issuer.keys.card_key(issued_card.key)

    def top_up(self, card: SimCard, amount: int, now: dt.datetime) -> None:
        self.issuer.deposit(self._accounts[card.index], amount, now)

    # --- taps ------------------------------------------------------------------------------

    def record(self, t: SimTap) -> TapRecord:
        """The tap record the validator's message carries (see ``_RECORD_SETTERS``)."""
        c = t.card
        r = _new_record(TapRecord)
        _set_tap_id(r, t.tap_id)
        _set_validator(r, t.validator_id)
        _set_operator(r, self.operator)
        _set_token(r, c.token)
        _set_masked(r, c.masked)
        _set_time(r, t.time)
        _set_stop(r, t.stop_id)
        _set_route(r, t.route_id)
        _set_action(r, ACTIONS[t.action])
        _set_atc(r, t.atc)
        _set_arqc(r, t.arqc)
        _set_ac_data(r, t.ac_data)
        _set_scheme(r, c.scheme)
        _set_category(r, c.category)
        _set_media(r, t.fare_media)
        return r

    def ingest(self, taps: Sequence[SimTap], now: dt.datetime) -> CoreReply:
        record = self.record
        self._undrained += len(taps)
        return self._reply(self.core.ingest([record(t) for t in taps], now))

    def needs_cryptogram(self, token: str) -> bool:
        """Will the core send this card's next tap's cryptogram to the issuer?  It does for
        the tap that opens an aggregate (account verification) and for a card in debt
        (recovery by tap); near the spend limit the next tap may open a new aggregate."""
        card = self.core.cards.get(token)
        if card is None or card.open_agg is None or card.debts or card.denied:
            return True
        return bool(card.open_agg.total >= self._limit)

    def close_day(self, now: dt.datetime) -> CoreReply:
        return self._reply(self.core.close_due(now))

    def recover(self, now: dt.datetime) -> CoreReply:
        return self._reply(self.core.run_recovery(now))

    def _reply(self, res: BatchResult) -> CoreReply:
        # The change rows are for a database, which a simulated day does not keep: they are
        # built and dropped only to bound memory on very long shards.
        if self._undrained >= DRAIN_AFTER:
            self.core.drain_changes()
            self.issuer.drain_changes()
            self._undrained = 0
        out = CoreReply(accepted=res.accepted, duplicates=res.duplicates, rejected=res.rejected)
        for e in res.events:
            if e.kind == "deny_add":
                out.deny_add.append((e.ref, _code(e.code)))
            elif e.kind == "deny_remove":
                out.deny_remove.append(e.ref)
            elif e.kind == "alert":
                out.alerts.append(e.detail)
            else:
                out.events.append((e.kind, _code(e.code)))
        return out

    # --- the e-purse -----------------------------------------------------------------------

    def epurse_quote(self, tap: SimTap) -> EpurseQuote:
        state = self._fares.get(tap.card.index)
        fare_tap = FareTap(tap.tap_id, tap.card.token, tap.time, tap.stop_id, tap.route_id,
                           _ON_OFF[tap.action], tap.card.category, "tunion")
        if self.feed is None:  # the flat fare at boarding, as the QuickPass taps pay it
            fare = (self.flat_fare or 0) if tap.action != "tap_off" else 0
            return EpurseQuote(tap.card.index, fare, state)
        try:
            new, charges = price_tap(self.feed, state, fare_tap)  # type: ignore[arg-type]
        except TapError:
            return EpurseQuote(tap.card.index, 0, state)
        return EpurseQuote(tap.card.index, sum(c.amount for c in charges), new)

    def epurse_commit(self, quote: EpurseQuote) -> None:
        self._fares[quote.card] = quote.state

    # --- figures ---------------------------------------------------------------------------

    def money(self) -> dict[str, int]:
        b = self.core.balances
        return {"fares": self.core.fares_total, "charged": b[ISSUER_SETTLEMENT],
                "receivable": b[RECEIVABLE], "first_ride_loss": b[FIRST_RIDE_LOSS]}


def _describe(code: str) -> str:
    try:
        rc = ResponseCode(code)
    except ValueError:
        return code
    return f"{code} {DESCRIPTIONS.get(rc, rc.name.lower())}"


_CODES: dict[str, str] = {}


def _code(code: str) -> str:
    """``"51 insufficient funds"`` for ``"51"`` (the enum look-up by value is slow: memoised)."""
    text = _CODES.get(code)
    if text is None:
        text = _CODES[code] = _describe(code)
    return text


def make_core(city: City, cfg: SimConfig, shard: int, token_key: bytes,
              profiles: dict[str, CardProfile]) -> RealCore:
    return RealCore(city, cfg, shard, token_key, profiles)


def wired(factory: Any, flat_fare: bool = False) -> dict[str, str]:
    """What real code the run drives (for the report); ``flat_fare``: the run prices rides
    at a flat fare (a feed without fare tables), not with the fare engine."""
    if factory is not make_core:
        return {"core": f"{getattr(factory, '__module__', '?')}."
                        f"{getattr(factory, '__qualname__', '?')} (not the real core)"}
    return {
        "kernel": "emv.kernel.Kernel with emv.card.VirtualCard and the e-purse PSAM "
                  "(calibration, or every tap with --fidelity full)",
        "card cryptograms": "emv.crypto schemes (tdes, sm4) of each rider's card",
        "validator verdict": "terminal.decisions.decide (the card's word, then the deny list)",
        "fares": ("backoffice.pricing.FlatFarePricer: one flat fare a boarding (--flat-fare; "
                  "the feed has no fare tables), QuickPass and e-purse alike" if flat_fare else
                  "fare.engine.price_tap over the city's GTFS-Fares v2 tables (through "
                  "backoffice.fare_pricer.FarePricer; e-purse fares priced at the gate)"),
        "transaction core": "backoffice.engine.BackOffice (deferred authorization, deny list, "
                            "debt recovery, ledger), one per shard, in memory",
        "issuer": "issuer.service.Issuer (accounts, lifecycle, ARQC verification, holds)",
    }
