"""The demo's live view reads a tenant's federation tables with plain SQL (migration 0004) and
renders them in an 80-column terminal."""

from __future__ import annotations

import io
import json
import uuid

import psycopg
import pytest
from rich.console import Console

from yggdrasil.devstack.view import (
    ProcessState,
    StackActivity,
    TenantActivity,
    read_tenant_activity,
    render_activity,
    summary_line,
)

pytestmark = pytest.mark.integration

_OUTBOX = """
    INSERT INTO b2b_events (event_id, event_type, module, source_tenant, dest_tenant, aggregate_type,
                            aggregate_id, sequence, subject, envelope, status, receipt_outcome)
    VALUES (%s, %s, %s, 'acme', 'bravo', %s, %s, %s, 'ygg.events.x.bravo.acme', '\\x00', %s, %s)
"""
_OUTBOX_BUNDLE = """
    INSERT INTO b2b_events (event_id, event_type, module, source_tenant, dest_tenant, aggregate_type,
                            aggregate_id, sequence, subject, envelope, status)
    VALUES (%s, 'b2b.receipts', 'b2b', 'acme', 'bravo', 'b2b_receipts', %s, 1, 'ygg.events.b2b.bravo.acme', %s,
            'published')
"""
_INBOX = """
    INSERT INTO b2b_inbox (source_tenant, event_id, event_type, aggregate_type, aggregate_id, sequence, outcome)
    VALUES ('bravo', %s, %s, 'sales_order', %s, %s, %s)
"""


def test_activity_counts_order_events_by_status_and_lists_the_latest_both_ways(tenant_dsn: str):
    with psycopg.connect(tenant_dsn, autocommit=True) as conn:
        assert read_tenant_activity(conn, "acme") == TenantActivity("acme")
        outbox = [("sales.order.created", "sales", "sales_order", "41", 1, "published", None),
                  ("sales.order.created", "sales", "sales_order", "42", 1, "pending", None),
                  ("sales.order.created", "sales", "sales_order", "43", 1, "rejected", "rejected"),
                  ("sales.order.confirmed", "sales", "sales_order", "44", 1, "acknowledged", "applied"),
                  ("b2b.receipt", "b2b", "b2b_event", str(uuid.uuid4()), 1, "published", None),
                  ("b2b.receipt", "b2b", "b2b_event", str(uuid.uuid4()), 1, "pending", None)]
        for row in outbox:
            conn.execute(_OUTBOX, (uuid.uuid4(), *row))
        # A bundle of three receipts, as the fast pass stores them, counts three.
        bundle = json.dumps({"payload": {"receipts": [{"outcome": "applied"}] * 3}}).encode()
        conn.execute(_OUTBOX_BUNDLE, (uuid.uuid4(), str(uuid.uuid4()), bundle))
        for row in [("sales.order.created", "7", 1, "applied"), ("sales.order.shipped", "7", 3, "held"),
                    ("b2b.receipt", "x", 1, "applied")]:
            conn.execute(_INBOX, (uuid.uuid4(), *row))
        conn.execute("INSERT INTO b2b_quarantine (subject, raw, reason) VALUES ('ygg.events.sales.acme.zulu', "
                     "'\\x00', 'partner.unknown')")

        activity = read_tenant_activity(conn, "acme")

    assert (activity.pending, activity.published, activity.acknowledged, activity.rejected) == (2, 1, 1, 1)
    assert (activity.receipts_sent, activity.receipts_pending) == (4, 1)
    assert (activity.applied, activity.held, activity.quarantined, activity.awaiting_approval) == (1, 0, 1, 0)
    assert [(e.direction, e.order, e.sequence) for e in activity.recent if e.direction == "in"] == [
        ("in", "7", 3), ("in", "7", 1)]
    assert len([e for e in activity.recent if e.direction == "out"]) == 3  # the latest three, receipts apart
    assert summary_line(activity).startswith("acme: outbox 2 pending, 1 published, 1 acknowledged, 1 rejected; ")

    stack = StackActivity((activity, TenantActivity("bravo", error="database unreachable: connection refused")),
                          {"sidecar:acme": ProcessState(4242, 1), "sidecar:bravo": ProcessState(None, 2)})
    text = rendered(stack)
    assert "sales.order.shipped" in text and "acked: applied" in text
    assert "bravo: database unreachable: connection refused" in text
    assert "sidecar:acme 4242 ↻1" in text and "sidecar:bravo down ↻2" in text

    # An 80x24 terminal: the view fits, with fewer events per tenant.
    lines = rendered(stack, height=24).splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert len(lines) <= 24


def rendered(activity: StackActivity, height: int | None = None) -> str:
    console = Console(width=80, record=True, force_terminal=False, file=io.StringIO())
    console.print(render_activity(activity, height=height))
    return console.export_text()
