"""What `ygg demo` shows while it runs: events flowing between the tenants, and their states.

Once a second, `ActivityMonitor` reads each tenant's federation tables (migration 0004) with
plain SQL, on a connection of its own in a thread of its own, so a slow or restarting database
never delays the supervisor. It hands a `StackActivity` to a callback: the live terminal table
(`render_activity`) or, with `--no-view` and when output is not a terminal, a log line per tenant
whenever its counts change (`summary_line`).

The counts cover order events (`sales.*`, `purchasing.*`), except `pending`, which counts
everything waiting for the broker: receipts too, which every order event is answered with.
Receipts are otherwise counted apart, since they are never acknowledged themselves.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from rich.console import RenderableType

log = logging.getLogger("ygg.demo")

# The latest order events shown per tenant and direction.
RECENT_EVENTS = 3

_COUNTS = """
    SELECT e.pending, e.published, e.acknowledged, e.rejected, e.receipts_sent, e.receipts_pending,
           (SELECT count(*) FROM b2b_inbox WHERE outcome = 'applied' AND event_type NOT LIKE 'b2b.%'),
           (SELECT count(*) FROM b2b_held_events),
           (SELECT count(*) FROM b2b_quarantine),
           (SELECT count(*) FROM b2b_approvals WHERE state = 'pending')
      FROM (SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                   count(*) FILTER (WHERE status = 'published' AND module <> 'b2b') AS published,
                   count(*) FILTER (WHERE status = 'acknowledged' AND module <> 'b2b') AS acknowledged,
                   count(*) FILTER (WHERE status = 'rejected' AND module <> 'b2b') AS rejected,
                   coalesce(sum(r.receipts) FILTER (WHERE status <> 'pending'), 0) AS receipts_sent,
                   coalesce(sum(r.receipts) FILTER (WHERE status = 'pending'), 0) AS receipts_pending
              FROM b2b_events
              -- A receipt row carries one receipt; a bundle the fast pass stored, several.
              CROSS JOIN LATERAL (
                   SELECT CASE event_type
                          WHEN 'b2b.receipt' THEN 1
                          WHEN 'b2b.receipts' THEN
                               jsonb_array_length(convert_from(envelope, 'UTF8')::jsonb -> 'payload' -> 'receipts')
                          END AS receipts) r) e
"""

# The latest order events in each direction. Outbound: the outbox row's status, and what the
# destination answered. Inbound: what we recorded. Events of one transaction share a time, so
# the sequence breaks ties.
_RECENT = """
    SELECT * FROM (
        (SELECT 'out' AS direction, created_at AS at, event_type, dest_tenant AS partner, aggregate_id,
                sequence, status, receipt_outcome AS detail
           FROM b2b_events WHERE module <> 'b2b' ORDER BY id DESC LIMIT %(limit)s)
        UNION ALL
        (SELECT 'in', received_at, event_type, source_tenant, aggregate_id, sequence, outcome, NULL
           FROM b2b_inbox WHERE event_type NOT LIKE 'b2b.%%'
          ORDER BY received_at DESC, sequence DESC LIMIT %(limit)s)
    ) latest
    ORDER BY at DESC, sequence DESC
"""


@dataclass(frozen=True)
class RecentEvent:
    direction: str  # "out" | "in"
    at: datetime
    event_type: str
    partner: str
    order: str
    sequence: int
    status: str
    detail: str | None


@dataclass(frozen=True)
class TenantActivity:
    tenant: str
    pending: int = 0  # every event waiting for the broker, receipts included
    published: int = 0
    acknowledged: int = 0
    rejected: int = 0
    receipts_sent: int = 0
    receipts_pending: int = 0
    applied: int = 0
    held: int = 0
    quarantined: int = 0
    awaiting_approval: int = 0
    recent: tuple[RecentEvent, ...] = ()
    error: str | None = None  # the database could not be read this time


@dataclass(frozen=True)
class ProcessState:
    pid: int | None
    restarts: int


@dataclass(frozen=True)
class StackActivity:
    tenants: tuple[TenantActivity, ...]
    processes: Mapping[str, ProcessState] = field(default_factory=dict)


def read_tenant_activity(conn: psycopg.Connection, tenant: str, recent: int = RECENT_EVENTS) -> TenantActivity:
    """Two queries: the counts, and the latest `recent` events in each direction."""
    row = conn.execute(_COUNTS).fetchone()
    assert row is not None
    events = tuple(RecentEvent(*r) for r in conn.execute(_RECENT, {"limit": recent}).fetchall())
    return TenantActivity(tenant, *row, recent=events)


def summary_line(activity: TenantActivity) -> str:
    """One line per tenant, for logs: `--no-view`, or output that is not a terminal."""
    if activity.error:
        return f"{activity.tenant}: {activity.error}"
    return (f"{activity.tenant}: outbox {activity.pending} pending, {activity.published} published, "
            f"{activity.acknowledged} acknowledged, {activity.rejected} rejected; "
            f"inbox {activity.applied} applied, {activity.held} held, {activity.quarantined} quarantined, "
            f"{activity.awaiting_approval} awaiting approval; receipts {activity.receipts_sent} sent, "
            f"{activity.receipts_pending} pending")


def _process_cell(state: ProcessState | None) -> str:
    if state is None:
        return "-"
    text = str(state.pid) if state.pid else "[red]down[/red]"
    if state.restarts:
        text += f" [yellow]↻{state.restarts}[/yellow]"
    return text


def _count(value: int, style: str) -> str:
    return f"[{style}]{value}[/{style}]" if value else "[dim]0[/dim]"


_COLOURS = {"pending": "yellow", "published": "cyan", "acknowledged": "green", "rejected": "red",
            "applied": "green", "accepted": "green", "duplicate": "dim", "held": "yellow",
            "awaiting_approval": "magenta"}


def _status_cell(event: RecentEvent) -> str:
    """Outbound: how far the event got, and the destination's answer; inbound: what we did."""
    status = "acked" if event.status == "acknowledged" else event.status
    text = f"[{_COLOURS.get(event.status, 'white')}]{status.replace('_', ' ')}[/]"
    if event.detail and event.detail != event.status:
        text += f"[dim]: {event.detail.replace('_', ' ')}[/dim]"
    return text


# Lines of the view that are not event rows, besides one per tenant in each table.
_FIXED_LINES = 10


def render_activity(activity: StackActivity, height: int | None = None) -> RenderableType:
    """The live view: one row per tenant, then each tenant's latest order events, as many as
    fit in `height` lines (all that were read, without one)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    tenants = Table(title="Order events sent (outbox) and received (inbox)", title_justify="left",
                    box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    tenants.add_column("tenant", style="bold", no_wrap=True)
    for group, name in (("outbox", "pending"), ("", "published"), ("", "acked"), ("", "rejected"),
                        ("inbox", "applied"), ("", "held"), ("", "quarant."), ("to", "approve")):
        tenants.add_column(f"{group}\n{name}", justify="right", no_wrap=True)
    errors = []
    for t in activity.tenants:
        if t.error:
            tenants.add_row(t.tenant, "[red]?[/red]")
            errors.append(f"[red]{t.tenant}: {t.error}[/red]")
            continue
        tenants.add_row(
            t.tenant,
            _count(t.pending, "yellow"), _count(t.published, "cyan"), _count(t.acknowledged, "green"),
            _count(t.rejected, "red"), _count(t.applied, "green"), _count(t.held, "yellow"),
            _count(t.quarantined, "red"), _count(t.awaiting_approval, "magenta"),
        )

    count = max(len(activity.tenants), 1)
    per_tenant = None if height is None else max(1, (height - _FIXED_LINES - 2 * count) // count)
    events = Table(title="Latest order events", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                   collapse_padding=True)
    for name in ("at", "time", "from/to", "event", "order", "seq", "status"):
        events.add_column(name, justify="right" if name in ("order", "seq") else "left",
                          style="bold" if name == "at" else None, no_wrap=True)
    for n, t in enumerate(activity.tenants):
        if n:
            events.add_section()
        for row, e in enumerate(t.recent[:per_tenant]):
            arrow = f"→ {e.partner}" if e.direction == "out" else f"← {e.partner}"
            events.add_row(t.tenant if row == 0 else "", e.at.strftime("%H:%M:%S"), arrow, e.event_type,
                           e.order, str(e.sequence), _status_cell(e))
        if not t.recent and not t.error:
            events.add_row(t.tenant, "", "", "[dim]no federated orders yet[/dim]")

    processes = "  ".join(f"{name} {_process_cell(state)}" for name, state in activity.processes.items())
    return Group(tenants, *errors, events, f"[dim]pids: {processes}[/dim]")


class ActivityMonitor:
    """Reads every tenant's activity each `interval` seconds in a daemon thread and passes it
    to `on_update`. `processes()` gives the supervisor's current pids and restart counts."""

    def __init__(
        self,
        tenants: Sequence[tuple[str, str]],  # (tenant id, DSN)
        on_update: Callable[[StackActivity], None],
        processes: Callable[[], Mapping[str, ProcessState]] = dict,
        interval: float = 1.0,
    ):
        self.tenants = list(tenants)
        self.on_update = on_update
        self.processes = processes
        self.interval = interval
        self._connections: dict[str, psycopg.Connection] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-activity", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def snapshot(self) -> StackActivity:
        return StackActivity(tuple(self._read(tenant, dsn) for tenant, dsn in self.tenants), self.processes())

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.on_update(self.snapshot())
                except Exception:
                    log.exception("the activity view failed to update")
                self._stop.wait(self.interval)
        finally:
            for conn in self._connections.values():
                with contextlib.suppress(Exception):
                    conn.close()

    def _read(self, tenant: str, dsn: str) -> TenantActivity:
        try:
            conn = self._connections.get(tenant)
            if conn is None or conn.closed:
                # Short timeouts: while PostgreSQL restarts, the view says so and tries again.
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2,
                                       application_name="ygg-demo-view", options="-c statement_timeout=2000")
                self._connections[tenant] = conn
            return read_tenant_activity(conn, tenant)
        except psycopg.Error as exc:
            broken = self._connections.pop(tenant, None)
            if broken is not None:
                with contextlib.suppress(Exception):
                    broken.close()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return TenantActivity(tenant, error=f"database unreachable: {first}")


class ChangeLogger:
    """`on_update` for `--no-view`: a log line per tenant whenever its counts change."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def __call__(self, activity: StackActivity) -> None:
        for tenant in activity.tenants:
            line = summary_line(tenant)
            if self._last.get(tenant.tenant) != line:
                self._last[tenant.tenant] = line
                log.info("%s", line)
