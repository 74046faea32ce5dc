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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from nats.js.client import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from yggdrasil.federation.backoff import Backoff
from yggdrasil.federation.status import PublisherStatus

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "ygg_outbox"
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)

# Pending events, and events a destination asked for again (replays keep their status).
CLAIM_PENDING = """
    SELECT id, event_id, subject, envelope, replays
      FROM b2b_events
     WHERE status = 'pending' OR replay_requested_at IS NOT NULL
     ORDER BY id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
"""
# Only `pending` becomes `published`: a receipt may already have marked the row acknowledged
# (a previous run published it and died before marking it), and a replayed row keeps its status.
MARK_PUBLISHED = """
    UPDATE b2b_events
       SET status = CASE WHEN status = 'pending' THEN 'published' ELSE status END,
           published_at = CASE WHEN status = 'pending' THEN now() ELSE published_at END,
           attempts = attempts + 1, last_error = NULL, replay_requested_at = NULL
     WHERE id = ANY(%(ids)s)
"""
MARK_FAILED = """
    UPDATE b2b_events SET attempts = attempts + 1, last_error = %(error)s WHERE id = ANY(%(ids)s)
"""
COUNT_PENDING = "SELECT count(*) FROM b2b_events WHERE status = 'pending'"


@dataclass(frozen=True)
class PublishRound:
    claimed: int
    published: int
    error: str | None = None


async def publish_pending(conn: psycopg.AsyncConnection, js: JetStreamContext, *, limit: int,
                          ack_timeout: float = 5.0) -> PublishRound:
    """Claim up to `limit` pending events, publish them, mark them; one transaction, which
    holds the row locks while publishing (keep `limit` small for that reason).

    Publishes are pipelined (sent back to back, acks awaited together): one broker round
    trip per batch, not per event. Events the broker did not acknowledge stay pending, with
    `attempts` and `last_error`. Raises psycopg errors if the database fails."""
    async with conn.transaction():
        cur = await conn.execute(CLAIM_PENDING, {"limit": limit})
        rows = await cur.fetchall()
        if not rows:
            return PublishRound(0, 0)
        acks: list[asyncio.Future] = []
        error: str | None = None
        for _, event_id, subject, envelope, replays in rows:
            try:
                acks.append(await js.publish_async(subject, bytes(envelope),
                                                   headers={"Nats-Msg-Id": message_id(event_id, replays)},
                                                   wait_stall=ack_timeout))
            except Exception as exc:  # connection closed, stalled: the rest wait for the next round
                error = _describe(exc)
                break
        if acks:
            done, not_done = await asyncio.wait(acks, timeout=ack_timeout)
            for future in not_done:
                future.cancel()
        published, failed = [], []
        for (row_id, *_), future in zip(rows, acks, strict=False):
            if future.done() and not future.cancelled() and future.exception() is None:
                published.append(row_id)
            else:
                failed.append(row_id)
                if error is None:
                    exc = None if future.cancelled() or not future.done() else future.exception()
                    error = _describe(exc) if exc else f"no acknowledgement within {ack_timeout}s"
        failed += [row[0] for row in rows[len(acks):]]
        if published:
            await conn.execute(MARK_PUBLISHED, {"ids": published})
        if failed:
            await conn.execute(MARK_FAILED, {"ids": failed, "error": error})
    return PublishRound(len(rows), len(published), error)


def message_id(event_id: object, replays: int) -> str:
    """The broker's de-duplication key: the event id, or a new one per requested replay."""
    return str(event_id) if replays == 0 else f"{event_id}:replay:{replays}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


async def count_pending(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute(COUNT_PENDING)
    row = await cur.fetchone()
    return row[0] if row else 0


class Publisher:
    """The publishing loop. `wake` is set by `listen_for_outbox` on NOTIFY."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        status: PublisherStatus | None = None,
        batch_size: int = 100,
        poll_seconds: float = 5.0,
        backoff: Backoff | None = None,
        ack_timeout: float = 5.0,
        wake: asyncio.Event | None = None,
    ):
        self.pool = pool
        self.status = status or PublisherStatus()
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.ack_timeout = ack_timeout
        self.wake = wake or asyncio.Event()

    async def run(self, js: JetStreamContext, stop: asyncio.Event | None = None) -> None:
        """Publish until `stop` is set (checked between batches) or cancelled."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            # Cleared before claiming: a NOTIFY for a commit after our claim's snapshot sets
            # it again, so that event is not left waiting for the next poll.
            self.wake.clear()
            try:
                async with self.pool.connection() as conn:
                    round_ = await publish_pending(conn, js, limit=self.batch_size, ack_timeout=self.ack_timeout)
                    if round_.published:
                        self.status.published_total += round_.published
                        self.status.last_published_at = datetime.now(UTC)
                    if round_.error is None and round_.claimed < self.batch_size:
                        self.status.pending = await count_pending(conn)
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
            if round_.claimed == self.batch_size:
                self.status.move("running")
                continue  # there may be more
            self.status.move("idle")
            await _wait_unless(stop, self.wake, self.poll_seconds)
        self.status.move("stopped")


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
