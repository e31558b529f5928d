"""The tables of the transaction core, in SQL both SQLite and PostgreSQL accept.

``{serial}`` is the one spelling that differs (an auto-numbered primary key); the
dialect fills it in.  Money is BIGINT fen, times are BIGINT microseconds since the epoch
(UTC), bytes are hex text, so every column means the same on both backends.  Unique keys
are the last guard against a double charge: one tap per id, one ATC per card, one posting
per capture, one capture per hold, one clearing decision per e-purse tap.  Tables added
later are created by ``CREATE TABLE IF NOT EXISTS`` when an older database is opened.
"""

from __future__ import annotations

from issuer.load_sql import JOURNAL_TABLE

SCHEMA_VERSION = "1"

# How tapsim knows its own database (backoffice/README.md, "Storage"): SQLite's header field
# ``PRAGMA application_id`` holds APPLICATION_ID ("TAPS" in ASCII), and on both backends the
# meta table holds MARKER_KEY = SCHEMA_VERSION (beside the older VERSION_KEY row).
APPLICATION_ID = 0x54415053
MARKER_KEY = "tapsim.schema"
VERSION_KEY = "schema_version"

TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS taps (
        tap_id TEXT PRIMARY KEY,
        pan_token TEXT NOT NULL,
        masked_pan TEXT NOT NULL,
        validator_id TEXT NOT NULL,
        operator_id TEXT NOT NULL,
        time_us BIGINT NOT NULL,
        utc_offset_s INTEGER NOT NULL,
        service_day TEXT NOT NULL,
        stop_id TEXT NOT NULL,
        route_id TEXT NOT NULL,
        action TEXT NOT NULL,
        atc INTEGER NOT NULL,
        arqc TEXT NOT NULL,
        ac_data TEXT NOT NULL,
        scheme TEXT NOT NULL,
        rider_category TEXT NOT NULL,
        fare_media TEXT NOT NULL,
        amount BIGINT NOT NULL,
        explain TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        received_us BIGINT NOT NULL,
        UNIQUE (pan_token, atc))""",
    "CREATE INDEX IF NOT EXISTS taps_aggregate ON taps (aggregate_id)",
    """CREATE TABLE IF NOT EXISTS rejects (
        reject_id TEXT PRIMARY KEY,
        tap_id TEXT,
        field TEXT NOT NULL,
        reason TEXT NOT NULL,
        raw TEXT NOT NULL,
        received_us BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger (
        txn_id TEXT NOT NULL,
        debit TEXT NOT NULL,
        credit TEXT NOT NULL,
        operator_id TEXT NOT NULL,
        service_day TEXT NOT NULL,
        amount BIGINT NOT NULL,
        at_us BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS aggregates (
        aggregate_id TEXT PRIMARY KEY,
        pan_token TEXT NOT NULL,
        service_day TEXT NOT NULL,
        first_us BIGINT NOT NULL,
        last_us BIGINT NOT NULL,
        last_tap_id TEXT NOT NULL,
        fare_state_at_open TEXT NOT NULL,
        total BIGINT NOT NULL,
        tap_count INTEGER NOT NULL,
        status TEXT NOT NULL,
        auth_ref TEXT,
        verified INTEGER NOT NULL,
        atc INTEGER,
        arqc TEXT,
        ac_data TEXT,
        nominal_hold TEXT,
        closed_us BIGINT,
        close_reason TEXT NOT NULL,
        charge_ref TEXT,
        charge_code TEXT NOT NULL,
        lines TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS aggregates_status ON aggregates (status)",
    """CREATE TABLE IF NOT EXISTS debts (
        debt_id TEXT PRIMARY KEY,
        pan_token TEXT NOT NULL,
        amount BIGINT NOT NULL,
        lines TEXT NOT NULL,
        original_ref TEXT,
        created_us BIGINT NOT NULL,
        next_us BIGINT,
        attempts INTEGER NOT NULL,
        status TEXT NOT NULL,
        last_code TEXT NOT NULL,
        settled_us BIGINT)""",
    """CREATE TABLE IF NOT EXISTS transit_cards (
        pan_token TEXT PRIMARY KEY,
        masked_pan TEXT NOT NULL,
        fare_state TEXT NOT NULL,
        open_aggregate_id TEXT,
        denied INTEGER NOT NULL)""",
    # A card's ATC high-water mark and window, saved when its taps leave the late-arrival
    # horizon (a restart reads taps from the horizon's floor on, and these).
    """CREATE TABLE IF NOT EXISTS card_atcs (
        pan_token TEXT PRIMARY KEY,
        atc_high BIGINT NOT NULL,
        atc_bits TEXT NOT NULL)""",
    # What a restart reads: taps from the floor on, recent rejects, unpaid debts.
    "CREATE INDEX IF NOT EXISTS taps_time ON taps (time_us)",
    "CREATE INDEX IF NOT EXISTS rejects_received ON rejects (received_us)",
    "CREATE INDEX IF NOT EXISTS debts_status ON debts (status)",
    """CREATE TABLE IF NOT EXISTS deny_list (
        pan_token TEXT PRIMARY KEY,
        masked_pan TEXT NOT NULL,
        reason TEXT NOT NULL,
        since_us BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS deny_events (
        seq {serial},
        pan_token TEXT NOT NULL,
        masked_pan TEXT NOT NULL,
        op TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_us BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alerts (
        alert_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        pan_token TEXT NOT NULL,
        ref TEXT NOT NULL,
        detail TEXT NOT NULL,
        at_us BIGINT NOT NULL)""",
    # -- T-Union e-purse taps (paid on the chip) and what clearing decided for each
    """CREATE TABLE IF NOT EXISTS epurse_taps (
        tap_id TEXT PRIMARY KEY,
        issuer_id TEXT,
        card_number TEXT,
        card_serial INTEGER NOT NULL,
        amount BIGINT NOT NULL,
        balance_before BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        tac TEXT NOT NULL,
        psam_id TEXT NOT NULL,
        psam_serial BIGINT NOT NULL,
        key_version INTEGER,
        algorithm_id INTEGER,
        tac_time TEXT,
        day TEXT NOT NULL,
        time_us BIGINT NOT NULL,
        operator_id TEXT NOT NULL,
        validator_id TEXT NOT NULL,
        received_us BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS epurse_taps_day ON epurse_taps (day)",
    "CREATE INDEX IF NOT EXISTS epurse_taps_card ON epurse_taps (card_number)",
    """CREATE TABLE IF NOT EXISTS clearing_items (
        tap_id TEXT PRIMARY KEY,
        day TEXT NOT NULL,
        issuer_id TEXT NOT NULL,
        operator_id TEXT NOT NULL,
        card_serial INTEGER NOT NULL,
        amount BIGINT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        run_id TEXT NOT NULL,
        cleared_us BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS clearing_items_day ON clearing_items (day)",
    # -- the issuer's records (the in-process bank shares the database and its transactions)
    """CREATE TABLE IF NOT EXISTS iss_accounts (
        account_id TEXT PRIMARY KEY,
        bank_id TEXT NOT NULL,
        currency TEXT NOT NULL,
        balance BIGINT NOT NULL,
        held BIGINT NOT NULL,
        status TEXT NOT NULL,
        opened_us BIGINT NOT NULL,
        last_movement_us BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS iss_cards (
        pan_token TEXT PRIMARY KEY,
        masked_pan TEXT NOT NULL,
        psn TEXT NOT NULL,
        account_id TEXT NOT NULL,
        bank_id TEXT NOT NULL,
        scheme TEXT NOT NULL,
        kek_id TEXT NOT NULL,
        wrapped_key TEXT NOT NULL,
        expires_us BIGINT NOT NULL,
        state TEXT NOT NULL,
        state_changed_us BIGINT NOT NULL,
        state_before_lost TEXT,
        replacement TEXT,
        atc_floor INTEGER NOT NULL,
        recent_atcs TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS iss_auths (
        request_id TEXT PRIMARY KEY,
        pan_token TEXT NOT NULL,
        kind TEXT NOT NULL,
        amount BIGINT NOT NULL,
        currency TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        code TEXT NOT NULL,
        flags TEXT NOT NULL,
        at_us BIGINT NOT NULL,
        atc INTEGER,
        arqc TEXT,
        verified INTEGER NOT NULL,
        original_request_id TEXT,
        hold_id TEXT,
        completed_by TEXT)""",
    """CREATE TABLE IF NOT EXISTS iss_holds (
        hold_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        pan_token TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        currency TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        status TEXT NOT NULL,
        settled_us BIGINT)""",
    """CREATE TABLE IF NOT EXISTS iss_captures (
        capture_id TEXT PRIMARY KEY,
        hold_id TEXT NOT NULL UNIQUE,
        account_id TEXT NOT NULL,
        pan_token TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        currency TEXT NOT NULL,
        at_us BIGINT NOT NULL)""",
    JOURNAL_TABLE,  # the bank's journal (issuer/README.md, "Journal")
    # What the in-process issuer reads (SqlStore.load_issuer_open).
    "CREATE INDEX IF NOT EXISTS iss_auths_at ON iss_auths (at_us)",
    "CREATE INDEX IF NOT EXISTS iss_auths_open ON iss_auths (at_us) WHERE completed_by IS NULL "
    "AND code = '00' AND verified = 1 AND kind IN ('account_verification', 'purchase')",
    "CREATE INDEX IF NOT EXISTS iss_holds_status ON iss_holds (status)",
    "CREATE INDEX IF NOT EXISTS iss_holds_created ON iss_holds (created_us)",
    "CREATE INDEX IF NOT EXISTS iss_captures_at ON iss_captures (at_us)",
)


def table_names(ddl: tuple[str, ...]) -> frozenset[str]:
    """The tables ``ddl`` creates (its ``CREATE TABLE IF NOT EXISTS name`` statements)."""
    prefix = "CREATE TABLE IF NOT EXISTS "
    return frozenset(d[len(prefix):].split(None, 1)[0].rstrip("(") for d in ddl
                     if d.startswith(prefix))
