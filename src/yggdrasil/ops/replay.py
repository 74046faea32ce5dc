"""`ygg replay`: send a partner again, from our outbox, order events it already had.

For the loss that nothing in the federation notices by itself: a partner restored from a
backup has lost what it applied after the backup was taken. Our rows for those events are
acknowledged, so no receipt timeout sends them again; its broker consumer's ack floor is past
them, so the broker does not redeliver them; and an order with no later event shows it no gap
to ask a resync for. The operator of the source runs this for the partner, with the time its
backup was taken.

Marking is what a partner's `b2b.resync.request` does for one order (federation/resync.py):
`replay_requested_at` is set and the sidecar's publisher, woken by NOTIFY, sends the rows again
in outbox order under new message ids. Statuses do not change. At the partner, the inbox
(source + event id) turns what it still has into duplicates; what it lost is applied, in each
order's sequence. Only order events (modules `sales` and `purchasing`) are sent again: receipts
and resync requests are answers, and a restored partner asks again for what it still lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

ORDER_MODULES = ("sales", "purchasing")

# One batch per transaction, in id order (the publisher's order too), so that a long history
# is not one long transaction holding its rows. Rows already waiting for a replay are left as
# they are; pending rows are not sent yet anyway. `since` is about the partner's answers, not
# our writes: a partner answers an event after it applies it, so every event it applied since
# then was answered since then (or its answer is still on the way). An event written before
# the partner's backup but applied after it, because the partner was behind, is included.
_SELECT_BATCH = """
    SELECT id, module FROM b2b_events
     WHERE dest_tenant = %(destination)s AND module = ANY(%(modules)s) AND status <> 'pending'
       AND replay_requested_at IS NULL AND id > %(after)s
       AND (%(since)s::timestamptz IS NULL OR acknowledged_at IS NULL OR acknowledged_at >= %(since)s::timestamptz)
       AND (%(orders)s::text[] IS NULL OR aggregate_id = ANY(%(orders)s::text[]))
     ORDER BY id LIMIT %(limit)s
"""
# A row a resync request marked since the batch was read is not counted twice.
_MARK = """
    UPDATE b2b_events SET replay_requested_at = now(), replays = replays + 1
     WHERE id = ANY(%(ids)s) AND replay_requested_at IS NULL
    RETURNING module
"""
# Wakes the sidecar's publisher at commit, as a new outbox row would.
_WAKE_PUBLISHER = "SELECT pg_notify('ygg_outbox', '')"
_COUNT_WAITING = """
    SELECT count(*) FROM b2b_events
     WHERE dest_tenant = %(destination)s AND module = ANY(%(modules)s) AND replay_requested_at IS NOT NULL
"""


class ReplayRefused(Exception):
    """The replay cannot be done as asked; the message says why, in one line."""


@dataclass(frozen=True)
class ReplayScope:
    destination: str
    since: datetime | None = None
    order_ids: Sequence[str] = ()
    modules: Sequence[str] = ORDER_MODULES

    def describe(self) -> str:
        parts = [f"order events to {self.destination}"]
        if self.order_ids:
            parts.append(f"of {'order' if len(self.order_ids) == 1 else 'orders'} {', '.join(self.order_ids)}")
        if self.since is not None:
            parts.append(f"answered since {self.since.isoformat()} or not yet")
        if tuple(self.modules) != ORDER_MODULES:
            parts.append(f"in {', '.join(self.modules)}")
        return " ".join(parts)


@dataclass
class ReplayResult:
    scope: ReplayScope
    dry_run: bool
    by_module: dict[str, int] = field(default_factory=dict)
    already_waiting: int = 0  # marked before, by a resync request or an earlier replay

    @property
    def total(self) -> int:
        return sum(self.by_module.values())

    def summary(self) -> str:
        counts = ", ".join(f"{module} {count:,}" for module, count in sorted(self.by_module.items()))
        verb = "would mark" if self.dry_run else "marked"
        line = f"{verb} {self.total:,} {self.scope.describe()} for replay"
        if counts:
            line += f" ({counts})"
        if self.already_waiting:
            line += (f"; {self.already_waiting:,} of the order events to {self.scope.destination} were already "
                     "waiting to be sent again")
        if self.total and not self.dry_run:
            line += (f". The sidecar's publisher sends them again; {self.scope.destination}'s inbox drops "
                     "what it already has")
        return line


def replay_to_partner(conn: psycopg.Connection, scope: ReplayScope, *, dry_run: bool = False,
                      batch_size: int = 1000, on_progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Mark the outbox rows in `scope` for the publisher to send again (nothing, with
    `dry_run`). `conn` is in autocommit mode: each batch commits on its own. Raises
    ReplayRefused for a destination that is not a partner, or has departed."""
    unknown = [module for module in scope.modules if module not in ORDER_MODULES]
    if unknown or not scope.modules:
        raise ReplayRefused(f"modules must be among {', '.join(ORDER_MODULES)}, got {', '.join(unknown) or 'none'}")
    _check_partner(conn, scope.destination)
    params = {"destination": scope.destination, "modules": list(scope.modules), "since": scope.since,
              "orders": list(scope.order_ids) or None, "limit": batch_size}
    result = ReplayResult(scope, dry_run)
    result.already_waiting = conn.execute(_COUNT_WAITING, params).fetchone()[0]
    after = 0
    while True:
        with conn.transaction():
            rows = conn.execute(_SELECT_BATCH, {**params, "after": after}).fetchall()
            if not rows:
                break
            modules = [module for _, module in rows]
            if not dry_run:
                modules = [module for (module,) in conn.execute(_MARK, {"ids": [row_id for row_id, _ in rows]})]
                if modules:
                    conn.execute(_WAKE_PUBLISHER)
        for module in modules:
            result.by_module[module] = result.by_module.get(module, 0) + 1
        after = rows[-1][0]
        if on_progress is not None:
            on_progress(result.total)
    return result


def _check_partner(conn: psycopg.Connection, destination: str) -> None:
    row = conn.execute("SELECT status FROM b2b_partners WHERE tenant_id = %s", (destination,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT tenant_id FROM b2b_partners ORDER BY tenant_id").fetchall()]
        raise ReplayRefused(f"{destination!r} is not in the partner registry"
                            + (f" (partners: {', '.join(known)})" if known else " (it is empty)"))
    if row[0] == "departed":
        raise ReplayRefused(f"{destination} has departed: its events are kept here, not sent")
