"""The lifecycle as the seeds' banks run it, each rule at its boundary day (the day before, on
and after): restore and activation are account movement, a card replaced at another bank
has its old account closed after the grace period (balance moved), a replaced card answers
04 even once its balance moved, and every state answers the code of issuer/README.md."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from issuer.authorization import STATE_CODES, state_code
from issuer.codes import ResponseCode
from issuer.errors import IllegalTransitionError
from issuer.lifecycle import Event, effective_state, explain, sweep
from issuer.models import AccountStatus, AuthKind, AuthorizationRequest, CardState, ReplaceReason
from issuer.policy import ExpiryPolicy
from issuer.service import Issuer
from tests.core_fixtures import CST, MERCHANT, T0, TestCard, new_issuer, open_card, pan_for

RC = ResponseCode
S = CardState
DAY = timedelta(days=1)
README = Path(__file__).resolve().parents[1] / "issuer" / "README.md"


def pay(issuer: Issuer, tc: TestCard, now: datetime, amount: int = 100) -> ResponseCode:
    """A real purchase authorization (fresh cryptogram) from this card, now."""
    atc, arqc, data = tc.cryptogram(amount)
    rid = f"p{tc.atc}:{now.isoformat()}"
    req = AuthorizationRequest(rid, tc.token, AuthKind.PURCHASE, amount, "CNY", MERCHANT,
                               atc=atc, arqc=arqc, ac_data=data)  # fmt: skip
    return issuer.authorize(req, now).code


def test_restore_at_the_counter_is_account_movement() -> None:
    issuer = new_issuer()  # ICBC: dormant after 365 days without account movement
    tc = TestCard(pan_for(401))
    card = open_card(issuer, tc)  # activated (and last moved) at T0 - 30 days
    quiet_from = issuer.account(card.account_id).last_movement
    dormant_on = quiet_from + timedelta(days=365)
    assert pay(issuer, tc, dormant_on - DAY) is RC.APPROVED  # the day before: still active
    # Paying moved the account: start the quiet period again from a fresh card.
    tc = TestCard(pan_for(402))
    card = open_card(issuer, tc)
    assert pay(issuer, tc, dormant_on) is RC.NOT_PERMITTED  # on the day: dormant (unswept)
    assert issuer.card(tc.token).state is S.ACTIVE  # stored: the sweep has not run
    # Restored at the branch a day later: not refused although the stored state is active,
    # and taps are approved afterwards (restore counts as movement, no deposit needed).
    restored_at = dormant_on + DAY
    assert issuer.apply(tc.token, Event.RESTORE, restored_at).state is S.ACTIVE
    assert issuer.account(card.account_id).last_movement == restored_at
    assert pay(issuer, tc, restored_at) is RC.APPROVED
    # A second restore is refused: the card is active, for real now.
    with pytest.raises(IllegalTransitionError, match="cannot restore a card that is active"):
        issuer.apply(tc.token, Event.RESTORE, restored_at + DAY)


@pytest.mark.parametrize(("offset_days", "code"), [(364, RC.APPROVED), (365, RC.NOT_PERMITTED),
                                                   (366, RC.NOT_PERMITTED)])
def test_dormancy_counts_from_the_restore(offset_days: int, code: ResponseCode) -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(403))
    open_card(issuer, tc)
    restored_at = T0 + timedelta(days=400)
    issuer.apply(tc.token, Event.RESTORE, restored_at)  # stored active, effectively dormant
    assert pay(issuer, tc, restored_at + timedelta(days=offset_days)) is code


@pytest.mark.parametrize(("offset_days", "code"), [(364, RC.APPROVED), (365, RC.NOT_PERMITTED),
                                                   (366, RC.NOT_PERMITTED)])
def test_a_card_activated_long_after_issue_pays_until_dormant_from_its_activation(
    offset_days: int, code: ResponseCode
) -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(404))
    card = open_card(issuer, tc, activate=False)  # issued (account opened) at T0 - 30 days
    activated_at = T0 + timedelta(days=500)  # far beyond the dormancy period
    issuer.apply(tc.token, Event.ACTIVATE, activated_at)
    assert issuer.account(card.account_id).last_movement == activated_at
    assert pay(issuer, TestCard(tc.pan, atc=tc.atc), activated_at) is RC.APPROVED
    tc2 = TestCard(pan_for(405))
    open_card(issuer, tc2, activate=False)
    issuer.apply(tc2.token, Event.ACTIVATE, activated_at)
    assert pay(issuer, tc2, activated_at + timedelta(days=offset_days)) is code


def _replace_at_other_bank(issuer: Issuer, balance: int = 500) -> tuple[TestCard, TestCard, str]:
    old, new = TestCard(pan_for(410)), TestCard(pan_for(411))
    card = open_card(issuer, old, balance=balance, bank="BOC")
    issuer.open_account("acct-icbc", "ICBC", "CNY", T0)
    issuer.replace(old.token, new.pan, "01", "acct-icbc", reason=ReplaceReason.LOSS,
                   imk_id="imk1", expires_at=datetime(2036, 1, 1, tzinfo=CST), now=T0)
    return old, new, card.account_id


@pytest.mark.parametrize(("offset", "closed"), [(-DAY, False), (timedelta(0), True), (DAY, True)])
def test_other_bank_old_account_closes_after_grace_with_its_balance_moved(
    offset: timedelta, closed: bool
) -> None:
    issuer = new_issuer()
    old, new, old_account = _replace_at_other_bank(issuer)
    grace_end = T0 + issuer.policy("BOC").replacement_grace
    issuer.close_after_grace(grace_end + offset)
    account = issuer.account(old_account)
    target = issuer.account(issuer.card(new.token).account_id)
    if closed:
        assert (account.status, account.balance, target.balance) == (AccountStatus.CLOSED, 0, 500)
        rep = issuer.card(old.token).replacement
        assert rep is not None and rep.balance_moved
        changes = issuer.drain_changes()
        assert changes.journal[f"replace:{old_account}"].amount == 500
    else:
        assert (account.status, account.balance, target.balance) == (AccountStatus.OPEN, 500, 0)
    # The old card answers 04 whether or not its account closed: a newer card exists.
    assert pay(issuer, old, grace_end + offset) is RC.PICK_UP_REPLACED


def test_the_holder_may_withdraw_or_transfer_the_old_balance_before_grace() -> None:
    issuer = new_issuer()
    _, new, old_account = _replace_at_other_bank(issuer, balance=900)
    issuer.withdraw(old_account, 400, T0 + DAY)
    assert issuer.account(old_account).status is AccountStatus.OPEN  # 500 still on it
    target = issuer.card(new.token).account_id
    issuer.transfer(old_account, target, 500, T0 + 2 * DAY)
    # Emptied: the old account closes at once, nothing left for the grace period to move.
    assert issuer.account(old_account).status is AccountStatus.CLOSED
    assert issuer.account(target).balance == 500
    assert issuer.close_after_grace(T0 + timedelta(days=90)) == []


def test_a_replaced_card_whose_balance_moved_answers_04_not_46() -> None:
    issuer = new_issuer()
    old, new = TestCard(pan_for(420)), TestCard(pan_for(421))
    card = open_card(issuer, old, balance=1234)
    issuer.open_account("acct-new", "ICBC", "CNY", T0)
    issuer.replace(old.token, new.pan, "01", "acct-new", reason=ReplaceReason.DAMAGE,
                   imk_id="imk1", expires_at=datetime(2036, 1, 1, tzinfo=CST), now=T0)
    assert pay(issuer, old, T0 + DAY) is RC.PICK_UP_REPLACED
    issuer.confirm_balance_transfer(old.token, T0 + DAY)
    assert issuer.account(card.account_id).status is AccountStatus.CLOSED
    assert pay(issuer, old, T0 + 2 * DAY) is RC.PICK_UP_REPLACED  # was 46 before
    issuer.apply(new.token, Event.ACTIVATE, T0 + 2 * DAY)
    issuer.apply(new.token, Event.CANCEL, T0 + 3 * DAY)
    assert pay(issuer, new, T0 + 4 * DAY) is RC.CLOSED_ACCOUNT


def readme_state_codes() -> dict[str, str]:
    """The README's "state -> code" table (issuer/README.md, "Codes per state")."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Codes per state", 1)[1]
    table = next(part for part in section.split("\n\n") if part.startswith("| state"))
    out = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[re.sub(r"[`*]", "", cells[0])] = cells[1].strip("`")
    return out


def test_every_state_answers_the_code_of_the_readme_table() -> None:
    table = readme_state_codes()
    issuer = new_issuer()
    tc = TestCard(pan_for(430))
    card = open_card(issuer, tc)
    account = issuer.account(card.account_id)
    stop, keep = issuer.policy("ICBC"), issuer.policy("BOC")
    assert stop.expiry is ExpiryPolicy.STOP and keep.expiry is ExpiryPolicy.KEEP
    got = {"active": state_code(card, account, T0, stop).value}
    for state in CardState:
        if state in (S.ACTIVE, S.EXPIRED):
            continue
        got[state.value] = state_code(dataclasses.replace(card, state=state), account, T0,
                                      stop).value  # fmt: skip
    expired = dataclasses.replace(card, state=S.EXPIRED)
    got["expired (policy stop)"] = state_code(expired, account, T0, stop).value
    got["expired (policy keep)"] = state_code(expired, account, T0, keep).value
    closed = dataclasses.replace(account, status=AccountStatus.CLOSED)
    got["active, account closed"] = state_code(card, closed, T0, stop).value
    got["replaced, account closed (balance moved)"] = state_code(
        dataclasses.replace(card, state=S.REPLACED), closed, T0, stop).value
    quiet = T0 + timedelta(days=400)
    got["active, no movement for the dormancy period"] = state_code(card, account, quiet,
                                                                    stop).value  # fmt: skip
    assert got == table
    for state, code in STATE_CODES.items():  # the code's own table says the same
        assert table.get(state.value, table.get(f"{state.value} (policy stop)")) == code.value


@pytest.mark.parametrize("policy_name", ["ICBC", "BOC"])
def test_effective_state_and_the_sweep_agree_past_expiry(policy_name: str) -> None:
    """A dormant card past expiry answers the same whether or not the nightly sweep ran."""
    issuer = new_issuer()
    tc = TestCard(pan_for(440))
    card = open_card(issuer, tc, bank=policy_name, expires_at=T0 + timedelta(days=10))
    card = dataclasses.replace(card, state=S.DORMANT)
    account = issuer.account(card.account_id)
    policy = issuer.policy(policy_name)
    for at in (card.expires_at - DAY, card.expires_at, card.expires_at + DAY):
        swept = sweep(card, account, at, policy)
        assert effective_state(card, account, at, policy) is swept.state
        assert state_code(card, account, at, policy) is state_code(swept, account, at, policy)


def test_explain_names_the_reason_beside_the_stored_state() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(450))
    card = open_card(issuer, tc)
    account = issuer.account(card.account_id)
    state, why = explain(card, account, account.last_movement + timedelta(days=365),
                         issuer.policy("ICBC"))
    assert state is S.DORMANT
    assert why.startswith(f"no account movement since {account.last_movement.date()} (365 days")
    assert why.endswith("stored state active (the nightly sweep has not run)")
    state, why = explain(card, account, card.expires_at + DAY, issuer.policy("ICBC"))
    assert state is S.EXPIRED and "expiry policy stop" in why


def test_the_core_s_day_close_runs_the_bank_s_day_job_once_a_service_day(
    tmp_path: Path,
) -> None:
    """Nothing unattended closed old accounts before: the transaction core's first day close
    of each service day now runs the in-process bank's day job, and it is durable."""
    from backoffice.service import TransactionCore
    from backoffice.storage import open_store, sqlite_url
    from tests.core_fixtures import BANKS, TOKEN_KEY, config, flat_pricer, keystore

    url = sqlite_url(str(tmp_path / "core.db"))
    store = open_store(url)
    try:
        core = TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY, config())
        old = new = TestCard(pan_for(0))
        old_account = ""

        def setup() -> None:
            nonlocal old, new, old_account
            old, new, old_account = _replace_at_other_bank(core.issuer)

        core.run(setup)
        grace_end = T0 + core.issuer.policy("BOC").replacement_grace
        core.close_due(grace_end - DAY)  # the day before: still open
        assert core.issuer.account(old_account).status is AccountStatus.OPEN
        core.close_due(grace_end)  # on the day: closed, the balance moved
        assert core.issuer.account(old_account).status is AccountStatus.CLOSED
    finally:
        store.close()
    store = open_store(url)  # durable: read back by a new core
    try:
        again = TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY, config())
        assert again.issuer.account(old_account).status is AccountStatus.CLOSED
        assert again.issuer.account(again.issuer.card(new.token).account_id).balance == 500
    finally:
        store.close()
