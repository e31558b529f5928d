"""tapsim writes only into its own database (issue 15, item 3).

Each complaint of the issue as a test: another program's SQLite file or PostgreSQL schema is
refused by every command, reading ones included, and left byte-for-byte as it was (never
switched to WAL); an empty database becomes tapsim's, marked; huge amounts, a read-only or
full database end in one message, never a traceback; a tap id holding a card-number-like digit
run is refused and never stored in clear; every record the replay rejects is named on stderr.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from backoffice.storage import StorageError, open_store, sqlite_url
from backoffice.storage.owner import KNOWN_TABLES, Owner, Survey, classify
from backoffice.storage.postgres import DEFAULT_SCHEMA, split_schema
from backoffice.storage.schema import APPLICATION_ID, MARKER_KEY, SCHEMA_VERSION
from backoffice.taps import MalformedTapError, parse_tap, scrub_id
from tapsim import checks
from tapsim.cli import main
from tests.core_fixtures import pg_base_url, pg_unavailable

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "backoffice" / "samples"
AT = "2025-03-01T10:00:00+08:00"
PAN = "6222020000000000026"  # a TEST PAN (Luhn-valid), never to be stored in clear
HUGE = 10**20


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The message of a run refused with one (its last line on stderr; a replay names its
    bad rows first): exit 2, no traceback."""
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("tapsim: error: "), err
    return last


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def siblings(path: Path) -> list[str]:
    """Files SQLite would leave beside ``path`` (journal, WAL, shared memory)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))


def commands(db: str, tmp_path: Path) -> list[list[str]]:
    """Every command that opens a database, reading and writing."""
    return [
        ["account", "show", "--db", db, "--card", "unionpay-debit"],
        ["card", "issue", "--db", db, "--profile", "unionpay-debit", "--at", AT],
        ["account", "deposit", "--db", db, "--card", "unionpay-debit", "--amount", "100"],
        ["account", "lost", "--db", db, "--card", "unionpay-debit"],
        ["backoffice", "replay", "--db", db, "--feed", "city", "--taps",
         str(SAMPLES / "taps.csv"), "--cards", str(SAMPLES / "cards.toml")],
        ["clearing", "run", "--db", db, "--day", "2025-03-03"],
        ["card", "load", "--db", db, "--card", "sscard3", "--amount", "100",
         "--state", str(tmp_path / "card.json")],
        ["issuer", "run", "--db", db, "--listen", "127.0.0.1:0"],
        ["backoffice", "run", "--db", db, "--broker", "mqtt://127.0.0.1:1"],  # refused first
    ]  # fmt: skip


# -- SQLite: another program's file ----------------------------------------------------------


@pytest.fixture
def foreign_file(tmp_path: Path) -> Path:
    """Another application's SQLite file, in SQLite's default rollback-journal mode."""
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.commit()
    conn.close()
    return path


def test_another_programs_sqlite_file_is_refused_by_every_command_and_left_untouched(
    capsys: pytest.CaptureFixture[str], foreign_file: Path, tmp_path: Path
) -> None:
    before = digest(foreign_file)
    for args in commands(str(foreign_file), tmp_path):
        err = refused(capsys, *args)
        assert f"sqlite file {foreign_file} is not a tapsim database (it holds table(s) " \
               "customers, orders)" in err, (args, err)
        assert digest(foreign_file) == before, args  # byte for byte
        assert siblings(foreign_file) == [], args  # no -wal, -shm or -journal left
    conn = sqlite3.connect(f"file:{foreign_file}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not WAL
        assert conn.execute("SELECT name FROM customers").fetchall() == [("Ada",)]
    finally:
        conn.close()


def test_a_file_with_another_programs_application_id_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 0x0f055112")  # Fossil's, say; no tables yet
    conn.close()
    before = digest(path)
    err = refused(capsys, "card", "issue", "--db", str(path), "--profile", "unionpay-debit")
    assert "is not a tapsim database (its application id is 0x0f055112, not tapsim's)" in err
    assert digest(path) == before


def test_a_file_that_is_no_sqlite_database_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, just notes\n" * 100)
    for args in commands(str(path), tmp_path)[:2]:
        err = refused(capsys, *args)
        assert f"sqlite file {path} is not an SQLite database" in err
    assert path.read_text() == "not a database, just notes\n" * 100


def test_an_empty_file_is_not_read_as_a_database_but_becomes_tapsim_s_when_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "new.db"
    path.touch()
    err = refused(capsys, "account", "show", "--db", str(path), "--card", "unionpay-debit")
    assert "holds no tapsim data yet" in err
    assert path.stat().st_size == 0 and siblings(path) == []  # show created nothing
    ok(capsys, "card", "issue", "--db", str(path), "--profile", "unionpay-debit", "--at", AT)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()
    assert meta[MARKER_KEY] == SCHEMA_VERSION and meta["schema_version"] == SCHEMA_VERSION
    assert "622202*********0026" not in ok(capsys, "account", "show", "--db", str(path),
                                           "--card", "unionpay-debit")


def test_account_show_of_a_tapsim_file_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bank.db"
    ok(capsys, "card", "issue", "--db", str(path), "--profile", "unionpay-debit", "--at", AT)
    before = digest(path)
    out = ok(capsys, "account", "show", "--db", str(path), "--card", "unionpay-debit")
    assert "622202*********0018" in out
    assert digest(path) == before


def test_a_database_of_an_older_tapsim_is_used_and_then_marked(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = open_store(sqlite_url(path))
    store._execute("DELETE FROM meta WHERE key = ?", (MARKER_KEY,))
    store._execute("PRAGMA application_id = 0")
    store.close()
    reader = open_store(sqlite_url(path), read_only=True)  # read: used as it is
    assert reader.meta(MARKER_KEY) is None
    reader.close()
    writer = open_store(sqlite_url(path))  # written: marked
    assert writer.meta(MARKER_KEY) == SCHEMA_VERSION
    writer.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


def test_another_schema_version_is_refused_with_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    store = open_store(sqlite_url(path))
    store.set_meta(MARKER_KEY, "99")
    store.close()
    with pytest.raises(StorageError, match=f"has schema version 99, this tapsim needs "
                                           f"{SCHEMA_VERSION}"):
        open_store(sqlite_url(path))


def test_what_counts_as_tapsim_s() -> None:
    known = frozenset({"meta", "taps", "ledger"})
    assert {"meta", "taps", "iss_cards", "iss_epurse_loads", "iss_journal"} <= KNOWN_TABLES
    assert classify(Survey(frozenset())) is Owner.EMPTY
    assert classify(Survey(frozenset({"x"}), APPLICATION_ID)) is Owner.TAPSIM
    assert classify(Survey(frozenset(), 0x0F055112)) is Owner.FOREIGN
    assert classify(Survey(known, 0, None, "1")) is Owner.OLDER_TAPSIM
    assert classify(Survey(known, 0, "1", None)) is Owner.TAPSIM
    # another program's own `meta` table with a schema_version row is not tapsim's
    assert classify(Survey(known | {"users"}, 0, None, "3")) is Owner.FOREIGN
    assert classify(Survey(frozenset({"taps", "ledger"}))) is Owner.FOREIGN  # no meta


# -- PostgreSQL: another program's schema --------------------------------------------------


@pytest.fixture
def pg_admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    try:
        conn = psycopg.connect(pg_base_url(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pg_unavailable(str(exc))
        raise  # pragma: no cover - pg_unavailable raises
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def pg_schema(pg_admin: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:16]
    try:
        yield name
    finally:
        pg_admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            sql.Identifier(name)))


def pg_url(schema: str, *extra: str) -> str:
    base = pg_base_url()
    return f"{base}{'&' if '?' in base else '?'}schema={schema}" + "".join(f"&{e}" for e in extra)


def tables_of(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> list[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                        "table_schema = %s ORDER BY table_name", (schema,)).fetchall()
    return [str(r[0]) for r in rows]


def test_a_postgresql_schema_of_another_program_is_refused_and_left_untouched(
    capsys: pytest.CaptureFixture[str], pg_admin: psycopg.Connection[tuple[object, ...]],
    pg_schema: str, tmp_path: Path,
) -> None:  # fmt: skip
    ident = sql.Identifier(pg_schema)
    pg_admin.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    pg_admin.execute(sql.SQL("CREATE TABLE {}.invoices (id INT PRIMARY KEY, total BIGINT)")
                     .format(ident))
    pg_admin.execute(sql.SQL("INSERT INTO {}.invoices VALUES (1, 500)").format(ident))
    url = pg_url(pg_schema)
    for args in commands(url, tmp_path):
        err = refused(capsys, *args)
        assert f"postgresql schema {pg_schema} of " in err, (args, err)
        assert "is not a tapsim database (it holds table(s) invoices)" in err, (args, err)
    assert tables_of(pg_admin, pg_schema) == ["invoices"]
    assert pg_admin.execute(sql.SQL("SELECT id, total FROM {}.invoices").format(ident)
                            ).fetchall() == [(1, 500)]


def test_a_missing_postgresql_schema_is_not_created_by_a_reading_command(
    capsys: pytest.CaptureFixture[str], pg_admin: psycopg.Connection[tuple[object, ...]],
    pg_schema: str,
) -> None:  # fmt: skip
    err = refused(capsys, "account", "show", "--db", pg_url(pg_schema), "--card", "x")
    assert f"postgresql schema {pg_schema} of " in err and "does not exist" in err
    assert not pg_admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                (pg_schema,)).fetchall()
    ok(capsys, "card", "issue", "--db", pg_url(pg_schema), "--profile", "unionpay-debit")
    assert {"meta", "taps", "iss_cards"} <= set(tables_of(pg_admin, pg_schema))
    marker = pg_admin.execute(sql.SQL("SELECT value FROM {}.meta WHERE key = %s").format(
        sql.Identifier(pg_schema)), (MARKER_KEY,)).fetchall()
    assert marker == [(SCHEMA_VERSION,)]


def test_without_schema_tapsim_uses_its_own_schema_and_points_at_older_tables(
    capsys: pytest.CaptureFixture[str], pg_admin: psycopg.Connection[tuple[object, ...]],
) -> None:  # fmt: skip
    """In a database of its own (made for the test): no ``?schema=`` means schema ``tapsim``,
    never ``public``; tables an older tapsim put in ``public`` are pointed at, not ignored."""
    assert split_schema("postgresql://h/db")[1] == DEFAULT_SCHEMA == "tapsim"
    assert split_schema("postgresql://h/db?schema=x&options=-c%20a%3Db") == (
        "postgresql://h/db?options=-c%20a%3Db", "x")
    name = "tapsim_t_" + uuid.uuid4().hex[:12]
    pg_admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = f"{pg_base_url().split('?')[0].rsplit('/', 1)[0]}/{name}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.accounts (id INT)")  # another program's
            ok(capsys, "card", "issue", "--db", url, "--profile", "unionpay-debit")
            assert tables_of(conn, "public") == ["accounts"]  # left alone
            assert "iss_cards" in tables_of(conn, "tapsim")
            err = refused(capsys, "card", "issue", "--db", f"{url}?schema=public",
                          "--profile", "unionpay-debit")
            assert "is not a tapsim database (it holds table(s) accounts)" in err
            # an older tapsim's tables in public, no schema tapsim: pointed at
            conn.execute("DROP SCHEMA tapsim CASCADE")
            conn.execute("DROP TABLE public.accounts")
            ok(capsys, "card", "issue", "--db", f"{url}?schema=public", "--profile",
               "unionpay-debit")
            err = refused(capsys, "account", "show", "--db", url, "--card", "unionpay-debit")
            assert "schema public holds tapsim tables" in err and "?schema=public" in err
            assert not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'tapsim'"
                                    ).fetchall()
            assert "622202*********0018" in ok(capsys, "account", "show", "--db",
                                               f"{url}?schema=public", "--card",
                                               "unionpay-debit")
    finally:
        pg_admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


# -- read-only and full databases: a message from every writing command ---------------------


def tapsim_without_override(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``tapsim ARGS`` in a child process that file permissions bind: as it is for a normal
    user; for root, with the capabilities that override them dropped (setpriv)."""
    command = [sys.executable, "-m", "tapsim.cli", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and no setpriv to drop CAP_DAC_OVERRIDE: "
                        "a read-only file cannot be made read-only for this test")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search",
                   "--inh-caps=-dac_override,-dac_read_search", *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


WRITERS = [
    ["account", "deposit", "--card", "unionpay-debit", "--amount", "100"],
    ["account", "lost", "--card", "unionpay-debit"],
    ["card", "issue", "--profile", "unionpay-debit", "--pan", PAN],
    ["backoffice", "replay", "--feed", "city", "--taps", str(SAMPLES / "taps.csv"),
     "--cards", str(SAMPLES / "cards.toml")],
    ["clearing", "run", "--day", "2025-03-03"],
]  # fmt: skip


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_a_read_only_sqlite_database_gives_a_message_from_every_writing_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, locked: str
) -> None:
    folder = tmp_path / "bank"
    folder.mkdir()
    path = folder / "bank.db"
    ok(capsys, "card", "issue", "--db", str(path), "--profile", "unionpay-debit", "--balance",
       "500", "--at", AT, "--activate")  # fmt: skip
    before = digest(path)
    (path if locked == "file" else folder).chmod(0o444 if locked == "file" else 0o555)
    try:
        for args in WRITERS:
            done = tapsim_without_override(*args, "--db", str(path), cwd=tmp_path)
            assert done.returncode == 2, (args, done.stderr)
            assert "Traceback" not in done.stderr, done.stderr
            last = done.stderr.splitlines()[-1]
            assert last.startswith(f"tapsim: error: sqlite file {path} is read-only: cannot "
                                   "write to it"), (args, done.stderr)
            assert digest(path) == before, args
        shown = tapsim_without_override("account", "show", "--db", str(path), "--card",
                                        "unionpay-debit", cwd=tmp_path)
        assert shown.returncode == 0 and "balance 5.00 CNY" in shown.stdout, shown.stderr
    finally:
        path.chmod(0o644)
        folder.chmod(0o755)


def test_a_read_only_postgresql_transaction_gives_a_message_from_every_writing_command(
    capsys: pytest.CaptureFixture[str], pg_admin: psycopg.Connection[tuple[object, ...]],
    pg_schema: str, tmp_path: Path,
) -> None:  # fmt: skip
    ok(capsys, "card", "issue", "--db", pg_url(pg_schema), "--profile", "unionpay-debit",
       "--balance", "500", "--at", AT, "--activate")  # fmt: skip
    url = pg_url(pg_schema, "options=-c%20default_transaction_read_only%3Don")
    for args in WRITERS:
        err = refused(capsys, *args, "--db", url)
        assert f"postgresql schema {pg_schema} of " in err and "is read-only: cannot write" \
            in err, (args, err)
    out = ok(capsys, "account", "show", "--db", url, "--card", "unionpay-debit")
    assert "balance 5.00 CNY" in out and "state       active" in out


def test_a_full_disk_gives_a_message_and_writes_nothing(tmp_path: Path) -> None:
    """A 1 MiB tmpfs filled up (in a mount namespace of its own: needs root and unshare)."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("a full disk is simulated with a tiny tmpfs: needs root and unshare "
                    f"(uid {os.geteuid()}, unshare {'found' if unshare else 'missing'})")
    seed = tmp_path / "seed.db"
    assert main(["card", "issue", "--db", str(seed), "--profile", "unionpay-debit",
                 "--balance", "500", "--at", AT, "--activate"]) == 0  # fmt: skip
    disk = tmp_path / "disk"
    disk.mkdir()
    db = disk / "bank.db"
    tapsim = f"{sys.executable} -m tapsim.cli"
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {disk} || exit 77\n"
        f"cp {seed} {db}\n"
        f"dd if=/dev/zero of={disk}/fill bs=1k 2>/dev/null\n"
        f"{tapsim} account deposit --db {db} --card unionpay-debit --amount 100; echo rc=$?\n"
        f"rm {disk}/fill\n"
        f"{tapsim} account show --db {db} --card unionpay-debit --json\n"
    )
    done = subprocess.run([unshare, "-m", "sh", "-c", script], check=False, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode == 77:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    assert "rc=2" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"tapsim: error: sqlite file {db}" in done.stderr, done.stderr
    assert '"balance": 500' in done.stdout  # the deposit did not happen


def test_a_commit_that_does_not_fit_is_a_message_and_rolled_back(tmp_path: Path) -> None:
    """SQLite's own full-database error (max_page_count), on the store: nothing half-written."""
    store = open_store(sqlite_url(tmp_path / "small.db"))
    try:
        pages = store._query("PRAGMA page_count")[0][0]
        store._query(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StorageError, match="the disk is full, nothing written"):
            store.set_meta("big", "x" * 100_000)
        assert store.meta("big") is None
    finally:
        store.close()


# -- amounts: range-checked where they come in ------------------------------------------------


@pytest.mark.parametrize(("field", "toml"), [
    ("cards.alice.balance", f"balance = {HUGE}\n"),
    ("cards.alice.balance", "balance = -1\n"),
    ("cards.alice.events[0].amount",
     f"[[cards.alice.events]]\nat = 2025-03-03T09:00:00+08:00\naction = \"deposit\"\n"
     f"amount = {HUGE}\n"),
])  # fmt: skip
def test_a_cards_file_amount_out_of_range_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, field: str, toml: str
) -> None:
    cards = tmp_path / "cards.toml"
    cards.write_text('[cards.alice]\nprofile = "unionpay-debit"\n' + toml)
    db = tmp_path / "core.db"
    err = refused(capsys, "backoffice", "replay", "--db", str(db), "--feed", "city",
                  "--taps", str(SAMPLES / "taps.csv"), "--cards", str(cards))
    assert f"{cards}: {field}: " in err and "is out of range" in err
    assert f"{checks.MAX_AMOUNT:,} minor units" in err
    assert not db.exists()


def test_the_cards_file_limit_is_the_command_line_s() -> None:
    from replay.cardsfile import MAX_AMOUNT

    assert MAX_AMOUNT == checks.MAX_AMOUNT < 2**63 // 1000  # BIGINT with room to add up


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_number_too_large_for_the_database_is_a_storage_error(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = sqlite_url(tmp_path / "core.db") if backend == "sqlite" else \
        pg_url(request.getfixturevalue("pg_schema"))
    store = open_store(url)
    try:
        with pytest.raises(StorageError, match=r"64-bit|bigint out of range"):
            store._executemany("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?)",
                               [("t", "a", "b", "op", "2025-03-03", HUGE, 0)])
        assert store.count("ledger") == 0
    finally:
        store.close()


# -- tap ids and rejects ------------------------------------------------------------------------


def test_a_tap_id_holding_a_card_number_is_refused_and_not_named() -> None:
    raw = {"tap_id": f"v1-{PAN}", "validator_id": "v1"}
    with pytest.raises(MalformedTapError) as refusal:
        parse_tap(raw)
    assert refusal.value.field == "tap_id" and refusal.value.tap_id is None
    assert PAN not in str(refusal.value)
    assert scrub_id(f"v1-{PAN}") == "v1-622202*********0026"
    assert scrub_id("v1:7f3a09c1:42") == "v1:7f3a09c1:42"  # a validator's own id form


def write_taps(path: Path, rows: list[str]) -> Path:
    path.write_text("tap_id,card,time,stop_id,route_id,action,rider_category,fare_media\n"
                    + "".join(r + "\n" for r in rows))
    return path


def test_replay_names_every_reject_on_stderr_and_never_a_clear_pan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    taps = write_taps(tmp_path / "taps.csv", [
        "a1,unionpay-debit,2025-03-03T07:50:00+08:00,S01,1,on,,cemv",
        "x9,zed,2025-03-03T07:55:00+08:00,S01,1,on,,cemv",
        f"{PAN},unionpay-debit,2025-03-03T08:30:00+08:00,S05,2,on,,cemv",
        "b1,unionpay-debit,2025-03-03T08:31:00+08:00,S99,2,on,,cemv",
    ])  # fmt: skip
    db = tmp_path / "core.db"
    code = main(["backoffice", "replay", "--db", str(db), "--feed", "city", "--taps", str(taps),
                 "--cards", "unionpay-debit"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = err.splitlines()
    assert f"{taps}:5: stop_id: unknown stop 'S99' (kept as a reject)" in lines
    assert f"{taps}:3: tap x9: card: no card 'zed' in the cards file (kept as a reject)" in lines
    assert any("tap 622202*********0026: tap_id: holds a run of 12 to 19 digits" in line
               for line in lines), err
    assert PAN not in out + err
    store = open_store(sqlite_url(db), read_only=True)
    try:
        assert sorted(r.tap_id or "" for r in store.rejects()) == [
            "622202*********0026", "b1", "x9"]
        assert all(PAN not in r.raw for r in store.rejects())
        assert [t.tap_id for t in store.tap_rows()] == ["a1"]
    finally:
        store.close()
    for f in [db, *db.parent.glob("core.db-*")]:
        assert PAN.encode() not in f.read_bytes(), f


def test_many_rejects_are_counted_after_the_first_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tapsim.commands.backoffice import REJECT_LINES

    rows = [f"r{i},nobody,2025-03-03T08:{i:02d}:00+08:00,S01,1,on,,cemv" for i in range(25)]
    taps = write_taps(tmp_path / "taps.csv", rows)
    code = main(["backoffice", "replay", "--db", str(tmp_path / "core.db"), "--feed", "city",
                 "--taps", str(taps), "--cards", "unionpay-debit"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    named = [line for line in err.splitlines() if "no card 'nobody'" in line]
    assert len(named) == REJECT_LINES == 20
    assert f"{taps}: 5 more record(s) rejected" in err


def test_a_wire_tap_with_a_card_number_in_its_id_is_dead_lettered_masked(
    tmp_path: Path,
) -> None:
    """The broker's path builds the core's record without parse_tap: the same rule there."""
    import datetime as dt
    import json

    import msgspec

    from backoffice.consumer.gate import FareMediaLabels, Refused, dead_letter, read_tap
    from tests.fixtures.terminal import rig
    from wire import encode

    qp = rig(tmp_path / "qp.db", validator_id="V1", stop_id="S01", route_id="1",
             card_name="unionpay-debit")
    record = qp.validator.tap(qp.reader).record
    assert record is not None
    wire = msgspec.structs.replace(record, tap_id=f"V1:{PAN}")
    media = FareMediaLabels({"cemv": 3})
    got = read_tap("tapsim/v1/taps/V1", encode(wire), media, dt.UTC)
    assert isinstance(got, Refused) and got.reason == "malformed"
    assert got.tap_id == "V1:622202*********0026" and "tap_id: holds a run" in got.detail
    letter = dead_letter("tapsim/v1/taps/V1", encode(wire), got, dt.datetime.now(dt.UTC))
    assert PAN not in json.dumps(json.loads(letter))


def test_a_storage_error_no_command_caught_is_still_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tapsim/cli.py's net: the database failing after it was opened (here: at the write)."""
    from backoffice.storage.sql import SqlStore

    db = str(tmp_path / "bank.db")
    ok(capsys, "card", "issue", "--db", db, "--profile", "unionpay-debit", "--activate")

    def fail(self: SqlStore, changes: object) -> None:
        raise StorageError(f"sqlite file {db} is read-only: cannot write to it (simulated)")

    monkeypatch.setattr(SqlStore, "save_issuer", fail)
    err = refused(capsys, "account", "deposit", "--db", db, "--card", "unionpay-debit",
                  "--amount", "100")
    # One line (the account command adds where and that nothing was written), no traceback.
    assert err.startswith("tapsim: error: ") and "\n" not in err.strip(), err
    assert err.endswith(f"sqlite file {db} is read-only: cannot write to it (simulated)"), err


def test_a_postgresql_role_that_may_only_read_gets_a_message_from_writing_commands(
    capsys: pytest.CaptureFixture[str], pg_admin: psycopg.Connection[tuple[object, ...]],
    pg_schema: str,
) -> None:  # fmt: skip
    ok(capsys, "card", "issue", "--db", pg_url(pg_schema), "--profile", "unionpay-debit",
       "--balance", "500", "--at", AT, "--activate")  # fmt: skip
    role = "r_" + uuid.uuid4().hex[:12]
    schema, who = sql.Identifier(pg_schema), sql.Identifier(role)
    pg_admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(who))
    try:
        pg_admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, who))
        pg_admin.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
            schema, who))
        parts = pg_url(pg_schema).split("://", 1)
        url = f"{parts[0]}://{role}@{parts[1].split('@', 1)[-1]}"
        try:
            psycopg.connect(url.split("?", maxsplit=1)[0], connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            pytest.skip(f"cannot log in as a new role here ({exc}): role test NOT run")
        for args in WRITERS[:3]:
            err = refused(capsys, *args, "--db", url)
            assert f"postgresql schema {pg_schema} of " in err and "not allowed (permission " \
                "denied" in err, (args, err)
        out = ok(capsys, "account", "show", "--db", url, "--card", "unionpay-debit")
        assert "balance 5.00 CNY" in out
    finally:
        pg_admin.execute(sql.SQL("DROP OWNED BY {}").format(who))
        pg_admin.execute(sql.SQL("DROP ROLE {}").format(who))
