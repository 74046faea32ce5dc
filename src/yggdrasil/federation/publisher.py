"""The outbox publisher: pending `b2b_events` rows onto the broker, in commit order.

Tryton's task queue, on JetStream: claim a small batch with `FOR UPDATE SKIP LOCKED` (a second
publisher skips the locked rows instead of waiting or publishing them twice), publish each with
`Nats-Msg-Id` = event id, mark the acknowledged ones `published`, commit. Wake on NOTIFY
`ygg_outbox`; poll as a fallback, since a notification sent while no one listened is lost.

If the publisher dies mid-batch, its locks go with it and the rows are still `pending`; the
next run publishes them again and the stream's de-duplication window drops the copies (the
destination's inbox catches any that get through). A pending row is never deleted: while the
broker is unreachable the rows wait, the publisher backs off, and they flow on recovery.

A row a destination asked for again (`replay_requested_at`, see resync.py) is claimed like a
pending one and republished under `<event id>:replay:<n>`, keeping its status.

Receipts close the loop. Every order event expects one (`b2b.receipt`, see receipts.py); when
it is published, its `receipt_due_at` is set `receipt_timeout` ahead. An event still
`published` after that was lost on the way (by the broker, or expired past its retention
before the destination read it), or its receipt was, or the destination has not got to it yet
(offline, or behind). Which one, the other receipts tell: a destination reads a stream in
order, so if it answered a later event of the stream, it read past this one; if this is the
newest unanswered event, nothing tells, and it is sent to find out. Those are marked for
replay like requested ones and sent again, and their next wait is twice as long (`resends`),
up to a cap; the rest wait for what the destination answers. The destination's inbox
(source + event id) turns a copy it already had into a duplicate, which it answers with what it
recorded, so the row gets acknowledged. This is what finds the loss no gap reveals: an
order's last event, with nothing later held behind it at the destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from nats.js.client import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from yggdrasil.events.errors import PayloadTooLarge
from yggdrasil.federation.backoff import Backoff
from yggdrasil.federation.receipts import OutboxMessage, QueuedReceipt, ReceiptBundler
from yggdrasil.federation.status import PublisherStatus

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "ygg_outbox"
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)

# Pending events, and events a destination asked for again (replays keep their status), oldest
# first; each kind is read (and locked, skipping rows another publisher holds) through its own
# partial index in id order. Written as one WHERE with OR, the planner, with statistics taken
# while a backlog was all pending (after a broker outage, say), walked the primary key from
# the first row ever sent and filtered: every claim read the whole sent history (8 ms per
# claim at 10,000 rows, and growing). A row locked here but beyond the limit waits for the
# next round, still locked by this one until it commits.
CLAIM_PENDING = """
    WITH pending AS (
        SELECT id, event_id, subject, envelope, replays, event_type, dest_tenant
          FROM b2b_events WHERE status = 'pending'
         ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ), asked_again AS (
        SELECT id, event_id, subject, envelope, replays, event_type, dest_tenant
          FROM b2b_events WHERE replay_requested_at IS NOT NULL
         ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    )
    SELECT DISTINCT ON (id) *
      FROM (SELECT * FROM pending UNION ALL SELECT * FROM asked_again) AS claimable
     ORDER BY id
     LIMIT %(limit)s
"""
# Only `pending` becomes `published`: a receipt may already have marked the row acknowledged
# (a previous run published it and died before marking it), and a replayed row keeps its status.
# A row still waiting for its receipt (order events: module `b2b` carries receipts and resync
# requests, which are never answered) is due again after the timeout, doubled per re-send.
MARK_PUBLISHED = """
    UPDATE b2b_events
       SET status = CASE WHEN status = 'pending' THEN 'published' ELSE status END,
           published_at = CASE WHEN status = 'pending' THEN now() ELSE published_at END,
           receipt_due_at = CASE WHEN status IN ('pending', 'published') AND module <> 'b2b'
                                 THEN now() + make_interval(secs => least(
                                          %(receipt_timeout)s::float8 * power(2, least(resends, 40)),
                                          %(resend_cap)s::float8))
                            END,
           attempts = attempts + 1, last_error = NULL, replay_requested_at = NULL
     WHERE id = ANY(%(ids)b::bigint[])
"""
MARK_FAILED = """
    UPDATE b2b_events SET attempts = attempts + 1, last_error = %(error)s WHERE id = ANY(%(ids)b::bigint[])
"""
COUNT_PENDING = "SELECT count(*) FROM b2b_events WHERE status = 'pending'"

# Unanswered past their due time, and either read past (the destination answered a later event
# of the same stream: this one, or its receipt, was lost) or the newest unanswered event of its
# destination and stream (nothing later tells whether the destination reads at all, so this one
# probes: its answer shows the others read past, if they were lost too). A destination that is
# merely offline or behind so gets one copy per stream and backoff interval, not one per event.
# Marked for replay, as a destination's resync request would mark them, so that the claim above
# republishes them under a new message id. SKIP LOCKED: a row being published right now is due
# again once it is marked published.
MARK_UNANSWERED = """
    WITH frontier AS (
        SELECT w.dest_tenant, w.module, max(w.id) AS newest_waiting,
               (SELECT max(a.id) FROM b2b_events a
                 WHERE a.dest_tenant = w.dest_tenant AND a.module = w.module
                   AND a.status IN ('acknowledged', 'rejected')) AS newest_answered
          FROM b2b_events w
         WHERE w.status = 'published' AND w.receipt_due_at IS NOT NULL
         GROUP BY w.dest_tenant, w.module
    ), due AS (
        SELECT e.id FROM b2b_events e JOIN frontier f USING (dest_tenant, module)
         WHERE e.status = 'published' AND e.receipt_due_at <= now() AND e.replay_requested_at IS NULL
           AND (e.id = f.newest_waiting OR e.id < f.newest_answered)
         ORDER BY e.receipt_due_at
         LIMIT %(limit)s
           FOR UPDATE OF e SKIP LOCKED
    ), marked AS (
        UPDATE b2b_events e
           SET replay_requested_at = now(), replays = e.replays + 1, resends = e.resends + 1
          FROM due WHERE e.id = due.id
        RETURNING e.dest_tenant
    )
    SELECT dest_tenant, count(*) FROM marked GROUP BY dest_tenant ORDER BY dest_tenant
"""
# Both counts use the partial index on unanswered rows.
COUNT_AWAITING_RECEIPT = """
    SELECT count(*), count(*) FILTER (WHERE receipt_due_at <= now())
      FROM b2b_events WHERE status = 'published' AND receipt_due_at IS NOT NULL
"""


@dataclass(frozen=True)
class PublishRound:
    claimed: int
    published: int
    error: str | None = None


async def publish_pending(conn: psycopg.AsyncConnection, js: JetStreamContext, *, limit: int,
                          ack_timeout: float = 5.0, receipt_timeout: float = 60.0,
                          resend_cap: float = 600.0, bundler: ReceiptBundler | None = None) -> PublishRound:
    """Claim up to `limit` pending events, publish them, mark them; one transaction, which
    holds the row locks while publishing (keep `limit` small for that reason). An order event
    is due a receipt `receipt_timeout` seconds after, times two per earlier re-send, at most
    `resend_cap`. With a `bundler`, a run of receipts for one destination goes as one
    `b2b.receipts` message (receipts.py).

    Publishes are pipelined (sent back to back, acks awaited together): one broker round
    trip per batch, not per event. Events the broker did not acknowledge stay pending, with
    `attempts` and `last_error`. Raises psycopg errors if the database fails."""
    async with conn.transaction():
        cur = await conn.execute(CLAIM_PENDING, {"limit": limit})
        rows = await cur.fetchall()
        if not rows:
            return PublishRound(0, 0)
        messages = _messages(rows, bundler)
        acks: list[asyncio.Future] = []
        error: str | None = None
        for message in messages:
            try:
                acks.append(await js.publish_async(message.subject, message.data,
                                                   headers={"Nats-Msg-Id": message.message_id},
                                                   wait_stall=ack_timeout))
            except Exception as exc:  # connection closed, stalled: the rest wait for the next round
                error = _describe(exc)
                break
        if acks:
            done, not_done = await asyncio.wait(acks, timeout=ack_timeout)
            for future in not_done:
                future.cancel()
        published, failed = [], []
        for message, future in zip(messages, acks, strict=False):
            if future.done() and not future.cancelled() and future.exception() is None:
                published += message.row_ids
            else:
                failed += message.row_ids
                if error is None:
                    exc = None if future.cancelled() or not future.done() else future.exception()
                    error = _describe(exc) if exc else f"no acknowledgement within {ack_timeout}s"
        failed += [row_id for message in messages[len(acks):] for row_id in message.row_ids]
        if published:
            await conn.execute(MARK_PUBLISHED, {"ids": published, "receipt_timeout": receipt_timeout,
                                                "resend_cap": resend_cap})
        if failed:
            await conn.execute(MARK_FAILED, {"ids": failed, "error": error})
    return PublishRound(len(rows), len(published), error)


def _messages(rows: list[tuple], bundler: ReceiptBundler | None) -> list[OutboxMessage]:
    """The claimed rows as broker messages, in claim order: each row its own message, except
    that with a bundler a run of two or more receipts on one subject becomes one bundle."""
    messages: list[OutboxMessage] = []
    run: list[tuple] = []

    def end_run() -> None:
        if len(run) == 1:
            messages.append(_single(run[0]))
        elif run:
            queued = [QueuedReceipt(row[0], bytes(row[3]), row[4]) for row in run]
            try:
                messages.extend(bundler.bundle(run[0][6], queued))  # type: ignore[union-attr]
            except PayloadTooLarge:
                # A receipt so near the size limit that even a bundle of one exceeds it: each
                # goes as stored (it was encoded within the limit when queued).
                messages.extend(_single(row) for row in run)
        run.clear()

    for row in rows:
        if bundler is not None and row[5] == "b2b.receipt":
            if run and run[0][2] != row[2]:
                end_run()
            run.append(row)
            continue
        end_run()
        messages.append(_single(row))
    end_run()
    return messages


def _single(row: tuple) -> OutboxMessage:
    row_id, event_id, subject, envelope, replays, *_ = row
    return OutboxMessage([row_id], subject, bytes(envelope), message_id(event_id, replays))


def message_id(event_id: object, replays: int) -> str:
    """The broker's de-duplication key: the event id, or a new one per replay (requested by
    the destination, or after a receipt timeout), since the broker drops a copy of an id it
    saw within its de-duplication window."""
    return str(event_id) if replays == 0 else f"{event_id}:replay:{replays}"


@dataclass(frozen=True)
class ResendRound:
    resent: dict[str, int]          # destination -> events marked to be sent again
    awaiting_receipt: int
    overdue: int                    # still past due (more than `limit` were)


async def resend_unanswered(conn: psycopg.AsyncConnection, *, limit: int = 1000) -> ResendRound:
    """Mark up to `limit` published events whose receipt is overdue to be sent again (the
    publisher's next claim republishes them under a new message id), in one transaction.
    Raises psycopg errors if the database fails."""
    async with conn.transaction():
        cur = await conn.execute(MARK_UNANSWERED, {"limit": limit})
        resent = {dest: count for dest, count in await cur.fetchall()}
        cur = await conn.execute(COUNT_AWAITING_RECEIPT)
        row = await cur.fetchone()
    awaiting, overdue = row if row else (0, 0)
    return ResendRound(resent, awaiting, overdue)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


async def count_pending(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute(COUNT_PENDING)
    row = await cur.fetchone()
    return row[0] if row else 0


class Publisher:
    """The publishing loop. `wake` is set by `listen_for_outbox` on NOTIFY.

    Beside publishing, it looks for events whose receipt is overdue every half receipt timeout
    (at most every 30 s), and only once `receipts_caught_up()` says our own consumer of
    receipts has drained its backlog since we connected: after an outage of ours, the receipts
    wait in the stream, and reading them first spares the destination a copy of every event."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        status: PublisherStatus | None = None,
        batch_size: int = 250,
        poll_seconds: float = 5.0,
        backoff: Backoff | None = None,
        ack_timeout: float = 5.0,
        wake: asyncio.Event | None = None,
        receipt_timeout: float = 60.0,
        resend_cap: float = 600.0,
        receipts_caught_up: Callable[[], bool] | None = None,
        bundler: ReceiptBundler | None = None,
    ):
        self.pool = pool
        self.status = status or PublisherStatus()
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.ack_timeout = ack_timeout
        self.wake = wake or asyncio.Event()
        self.receipt_timeout = receipt_timeout
        self.resend_cap = max(resend_cap, receipt_timeout)
        self.receipts_caught_up = receipts_caught_up or (lambda: True)
        self.bundler = bundler
        self.receipt_check_interval = max(0.1, min(receipt_timeout / 2, 30.0))

    async def run(self, js: JetStreamContext, stop: asyncio.Event | None = None) -> None:
        """Publish until `stop` is set (checked between batches) or cancelled."""
        stop = stop or asyncio.Event()
        clock = asyncio.get_running_loop().time
        next_receipt_check = clock() + self.receipt_check_interval
        while not stop.is_set():
            # Cleared before claiming: a NOTIFY for a commit after our claim's snapshot sets
            # it again, so that event is not left waiting for the next poll.
            self.wake.clear()
            resent = 0
            try:
                async with self.pool.connection() as conn:
                    round_ = await publish_pending(conn, js, limit=self.batch_size, ack_timeout=self.ack_timeout,
                                                   receipt_timeout=self.receipt_timeout,
                                                   resend_cap=self.resend_cap, bundler=self.bundler)
                    if round_.published:
                        self.status.published_total += round_.published
                        self.status.last_published_at = datetime.now(UTC)
                    if round_.error is None and round_.claimed < self.batch_size:
                        self.status.pending = await count_pending(conn)
                        if clock() >= next_receipt_check and self.receipts_caught_up():
                            next_receipt_check = clock() + self.receipt_check_interval
                            resent = await self._resend_unanswered(conn)
            except TRANSIENT_ERRORS as exc:
                self.status.move("database_unavailable", _describe(exc))
                await _sleep_unless(stop, self.backoff.next_delay())
                continue
            if round_.error is not None:
                # The broker is unreachable or refusing: the rows stay pending.
                self.status.move("backing_off", round_.error)
                await _sleep_unless(stop, self.backoff.next_delay())
                continue
            self.backoff.reset()
            if round_.claimed == self.batch_size or resent:
                self.status.move("running")
                continue  # there may be more, or events to send again
            self.status.move("idle")
            await _wait_unless(stop, self.wake, min(self.poll_seconds, self.receipt_check_interval))
        self.status.move("stopped")

    async def _resend_unanswered(self, conn: psycopg.AsyncConnection) -> int:
        round_ = await resend_unanswered(conn, limit=max(self.batch_size, 1000))
        self.status.awaiting_receipt, self.status.receipt_overdue = round_.awaiting_receipt, round_.overdue
        total = sum(round_.resent.values())
        if total:
            self.status.resent_total += total
            self.status.last_resent_at = datetime.now(UTC)
            for destination, count in round_.resent.items():
                log.warning("%s events to %s unanswered after their receipt timeout: sending them again",
                            count, destination, extra={"loop": self.status.name, "destination": destination,
                                                       "resent": count})
        return total


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_unless(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Wait for `wake` or `stop`, at most `seconds`."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def listen_for_outbox(dsn: str, wake: asyncio.Event, *, backoff: Backoff | None = None) -> None:
    """Set `wake` on every NOTIFY `ygg_outbox`, on a dedicated autocommit connection (LISTEN
    only works outside a transaction, and must not tie up a pool connection). Reconnects with
    backoff if the database goes away; the publisher's polling covers the gap. Runs until
    cancelled."""
    backoff = backoff or Backoff(1.0, 30.0)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
                backoff.reset()
                wake.set()  # whatever was committed while we were not listening
                async for _ in conn.notifies():
                    wake.set()
        except TRANSIENT_ERRORS as exc:
            log.debug("outbox listener lost its connection: %s", exc)
        await asyncio.sleep(backoff.next_delay())
