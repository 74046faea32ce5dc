"""`ygg replay` as an operator runs it against a real tenant database: which outbox rows it marks
for the publisher to send again, how it wakes the publisher, and what it refuses.

That marked rows are sent again and a restored partner applies them once is shown through a
real broker in tests/integration/federation/test_replay_after_partner_restore.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from backup_drill_helpers import run_ygg
from yggdrasil.events.catalogue import payload_state_hash
from yggdrasil.events.signing import encode_public_key, generate_keypair
from yggdrasil.federation.partners import add_partner
from yggdrasil.federation.publisher import OUTBOX_CHANNEL
from yggdrasil.tenant.adapters.outbox import enqueue_event

pytestmark = pytest.mark.integration

ME, BRAVO, CHARLIE = "acme-seller", "bravo-buyer", "charlie-buyer"
KEY = generate_keypair()[0]


async def outbox_row(dsn: str, destination: str, order_id: str, *, verb: str = "created", module: str = "sales",
                     status: str = "acknowledged", written: datetime | None = None,
                     answered: datetime | None = None) -> int:
    """One signed order event in our outbox, moved to `status` as the sidecar would have: an
    acknowledged or rejected one was answered (`answered`, default now)."""
    side = "sales" if module == "sales" else "purchasing"
    payload = {"order_id": order_id, "currency": "EUR", "state": "draft", "lines": [
        {"line_no": 1, "sku": "RETRO-CLOCK", "description": "Retro clock", "quantity": "1", "unit_price": "9.50"}]}
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        envelope = await enqueue_event(conn, signing_key=KEY, source=ME, destination=destination,
                                       type=f"{side}.order.{verb}", aggregate_id=order_id, payload=payload,
                                       state_hash=payload_state_hash(payload))
        row = await (await conn.execute(
            "UPDATE b2b_events SET status = %(status)s, created_at = coalesce(%(written)s, created_at),"
            " published_at = CASE WHEN %(status)s <> 'pending' THEN created_at END,"
            " acknowledged_at = CASE WHEN %(status)s IN ('acknowledged', 'rejected')"
            "                        THEN coalesce(%(answered)s, now()) END"
            " WHERE event_id = %(event_id)s RETURNING id",
            {"status": status, "written": written, "answered": answered,
             "event_id": envelope.event_id})).fetchone()
        await conn.commit()
    return row[0]


@pytest.fixture
async def outbox(tenant_dsn: str) -> dict[str, int]:
    """Our outbox after trading with two partners for a while: named rows, by what they are."""
    async with await psycopg.AsyncConnection.connect(tenant_dsn, autocommit=True) as conn:
        for partner in (BRAVO, CHARLIE):
            await add_partner(conn, tenant_id=partner, public_key=encode_public_key(generate_keypair()[1]),
                              approval_policy="auto")
    long_ago = datetime.now(UTC) - timedelta(days=30)
    return {
        "old": await outbox_row(tenant_dsn, BRAVO, "SO-1", written=long_ago, answered=long_ago),
        # Written long ago, applied only recently (the partner was behind).
        "answered late": await outbox_row(tenant_dsn, BRAVO, "SO-6", written=long_ago),
        "acknowledged": await outbox_row(tenant_dsn, BRAVO, "SO-2"),
        "rejected": await outbox_row(tenant_dsn, BRAVO, "SO-2", verb="updated", status="rejected"),
        "published": await outbox_row(tenant_dsn, BRAVO, "SO-3", status="published"),
        "purchasing": await outbox_row(tenant_dsn, BRAVO, "PO-7", module="purchasing"),
        "pending": await outbox_row(tenant_dsn, BRAVO, "SO-4", status="pending"),
        "other partner": await outbox_row(tenant_dsn, CHARLIE, "SO-5"),
    }


def marked(dsn: str) -> dict[int, int]:
    """{row id: replays} of the rows waiting to be sent again."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT id, replays FROM b2b_events WHERE replay_requested_at IS NOT NULL").fetchall())


def test_every_order_event_the_partner_answered_since_the_time_or_not_yet_is_marked_once_and_the_publisher_woken(
        tenant_dsn, outbox):
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    with psycopg.connect(tenant_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        result = run_ygg("replay", "--to", BRAVO, "--since", since, "--dsn", tenant_dsn)
        woken = list(listener.notifies(timeout=2, stop_after=1))
    assert result.returncode == 0, result.stderr
    expected = {outbox[name] for name in ("answered late", "acknowledged", "rejected", "published", "purchasing")}
    assert marked(tenant_dsn) == dict.fromkeys(expected, 1)
    assert result.stdout.strip().startswith(f"marked 5 order events to {BRAVO} answered since ")
    assert "or not yet for replay (purchasing 1, sales 4)" in result.stdout
    assert woken and woken[0].channel == OUTBOX_CHANNEL

    # Rows already waiting are not marked twice (nor counted as marked).
    again = run_ygg("replay", "--to", BRAVO, "--since", since, "--dsn", tenant_dsn)
    assert again.returncode == 0, again.stderr
    assert "marked 0 order events" in again.stdout
    assert f"5 of the order events to {BRAVO} were already waiting" in again.stdout
    assert marked(tenant_dsn) == dict.fromkeys(expected, 1)


def test_orders_and_modules_narrow_what_is_marked(tenant_dsn, outbox):
    result = run_ygg("replay", "--to", BRAVO, "--order", "SO-1", "--order", "SO-2", "--module", "sales",
                     "--dsn", tenant_dsn)
    assert result.returncode == 0, result.stderr
    assert set(marked(tenant_dsn)) == {outbox["old"], outbox["acknowledged"], outbox["rejected"]}
    assert f"marked 3 order events to {BRAVO} of orders SO-1, SO-2 in sales" in result.stdout


def test_a_dry_run_counts_and_marks_nothing(tenant_dsn, outbox):
    result = run_ygg("replay", "--to", BRAVO, "--dry-run", "--dsn", tenant_dsn)
    assert result.returncode == 0, result.stderr
    assert f"would mark 6 order events to {BRAVO} for replay (purchasing 1, sales 5)" in result.stdout
    assert marked(tenant_dsn) == {}


@pytest.mark.parametrize("args, message", [
    (["--to", "nobody-here"], f"'nobody-here' is not in the partner registry (partners: {BRAVO}, {CHARLIE})"),
    (["--to", BRAVO, "--module", "b2b"], "modules must be among sales, purchasing, got b2b"),
], ids=["unknown partner", "receipts module"])
def test_what_cannot_be_replayed_is_refused_with_one_line_and_nothing_marked(tenant_dsn, outbox, args, message):
    result = run_ygg("replay", *args, "--dsn", tenant_dsn)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
    assert marked(tenant_dsn) == {}


def test_a_departed_partner_is_refused(tenant_dsn, outbox):
    with psycopg.connect(tenant_dsn) as conn:
        conn.execute("UPDATE b2b_partners SET status = 'departed' WHERE tenant_id = %s", (CHARLIE,))
    result = run_ygg("replay", "--to", CHARLIE, "--dsn", tenant_dsn)
    assert result.returncode == 2
    assert "charlie-buyer has departed" in result.stderr
    assert marked(tenant_dsn) == {}


def test_a_time_that_is_not_a_time_is_a_usage_error(tenant_dsn):
    result = run_ygg("replay", "--to", BRAVO, "--since", "last tuesday", "--dsn", tenant_dsn)
    assert result.returncode == 2
    assert "--since" in result.stderr


def test_an_unreachable_database_is_one_line_and_exit_2():
    result = run_ygg("replay", "--to", BRAVO, "--dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot replay: ")
