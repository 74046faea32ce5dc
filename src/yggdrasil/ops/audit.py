"""The audit trail: reading it, and verifying its hash chain.

Migration 0002 chains every `audit_change_log` row to its predecessor:
row_hash = audit_row_digest(prev_hash, seq, ...). The triggers refuse UPDATE, DELETE and
TRUNCATE, but a superuser can switch triggers off (`session_replication_role = replica`).
What such a person cannot do without leaving a trace is:

- edit a row: its stored hash no longer matches its content ("edited");
- edit a row and recompute its hash: the next row's prev_hash no longer matches ("chain broken");
- remove rows from the middle: seq has a gap ("removed");
- remove the last rows: the chain head (`audit_chain_head`) points past the end ("head").

Verification recomputes every digest in SQL with the migration's own `audit_row_digest`, so
there is exactly one definition of what a hash covers. It walks the log by seq in batches
(keyset on the primary key) inside one REPEATABLE READ transaction: memory stays flat for
millions of rows, and rows appended while we walk are neither half-seen nor mistaken for a
head mismatch. The same checker serves the sync variant (`ygg audit verify`) and the async one
(`GET /api/v1/audit/verify`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

GENESIS_HASH = bytes(32)
BATCH_SIZE = 5000
# Beyond this many, problems are counted but not listed: one tampering usually yields one or
# two, and a report of a million lines helps nobody.
MAX_LISTED_PROBLEMS = 1000

ProgressCallback = Callable[[int, int], None]  # (rows checked, rows expected)

_BEGIN_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_HEAD = "SELECT last_seq, last_hash FROM audit_chain_head WHERE singleton"
_BATCH = """
    SELECT seq, table_name, record_id, prev_hash, row_hash,
           row_hash = audit_row_digest(prev_hash, seq, table_name, record_id, operation,
                                       old_values, new_values, actor, request_id, changed_at) AS hash_ok
      FROM audit_change_log
     WHERE seq > %(after)s
     ORDER BY seq
     LIMIT %(limit)s
"""


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    kind: str  # edited | chain_broken | removed | head
    problem: str


@dataclass
class AuditVerification:
    rows_checked: int = 0
    head_seq: int = 0
    problems: list[AuditProblem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def summary(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.rows_checked} rows checked, chain head at seq {self.head_seq}"
        return (f"audit trail TAMPERED: {self.problem_count} problem(s) found in {self.rows_checked} rows checked "
                f"(chain head at seq {self.head_seq})")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows_checked": self.rows_checked,
            "head_seq": self.head_seq,
            "problem_count": self.problem_count,
            "problems": [{"seq": p.seq, "kind": p.kind, "problem": p.problem} for p in self.problems],
        }


class _ChainChecker:
    """Consumes rows in seq order and records every break. No I/O: both variants feed it."""

    def __init__(self, head_seq: int, head_hash: bytes):
        self.head_seq = head_seq
        self.head_hash = head_hash
        self.result = AuditVerification(head_seq=head_seq)
        self.last_seq = 0
        self.last_hash = GENESIS_HASH

    def _report(self, seq: int, kind: str, problem: str) -> None:
        self.result.problem_count += 1
        if len(self.result.problems) < MAX_LISTED_PROBLEMS:
            self.result.problems.append(AuditProblem(seq, kind, problem))

    def feed(self, rows: Iterable[dict]) -> None:
        for row in rows:
            seq = row["seq"]
            what = f"{row['table_name']} {row['record_id']}"
            if seq != self.last_seq + 1:
                # The successor's prev_hash commits to a row we no longer have: nothing to compare.
                self._report(self.last_seq + 1, "removed", _missing(self.last_seq + 1, seq - 1))
            elif bytes(row["prev_hash"]) != self.last_hash:
                self._report(seq, "chain_broken",
                             f"row {seq} ({what}): prev_hash does not match the hash of row {self.last_seq}; "
                             f"row {self.last_seq} was edited and its hash recomputed, or rows were replaced")
            if not row["hash_ok"]:
                self._report(seq, "edited", f"row {seq} ({what}) was edited: its content does not match its hash")
            self.last_seq = seq
            self.last_hash = bytes(row["row_hash"])
            self.result.rows_checked += 1

    def finish(self) -> AuditVerification:
        if self.head_seq > self.last_seq:
            self._report(self.last_seq + 1, "removed",
                         _missing(self.last_seq + 1, self.head_seq) + f" (the chain head is at seq {self.head_seq})")
        elif self.head_seq < self.last_seq:
            self._report(self.head_seq + 1, "head",
                         f"rows {self.head_seq + 1} to {self.last_seq} lie beyond the chain head "
                         f"(seq {self.head_seq}): they were inserted around the triggers")
        elif self.head_hash != self.last_hash:
            self._report(self.last_seq, "head",
                         f"the chain head's hash does not match row {self.last_seq}: the last row was "
                         f"replaced or the head was edited")
        return self.result


def _missing(first: int, last: int) -> str:
    if first == last:
        return f"row {first} is missing: it was removed from the log"
    return f"rows {first} to {last} are missing: they were removed from the log"


def _read_head(row: tuple | None) -> tuple[int, bytes]:
    if row is None:  # the head row itself was deleted
        return 0, GENESIS_HASH
    return row[0], bytes(row[1])


def verify_audit_chain(
    conn: psycopg.Connection, *, batch_size: int = BATCH_SIZE, on_progress: ProgressCallback | None = None,
) -> AuditVerification:
    """Verify the whole chain on `conn` (sync). Starts its own read-only snapshot transaction
    when the connection is idle. Raises psycopg errors (e.g. the database is unreachable)."""
    own_snapshot = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if own_snapshot:
            conn.execute(_BEGIN_SNAPSHOT)
        head_seq, head_hash = _read_head(conn.execute(_HEAD).fetchone())
        checker = _ChainChecker(head_seq, head_hash)
        with conn.cursor(row_factory=dict_row) as cur:
            while True:
                rows = cur.execute(_BATCH, {"after": checker.last_seq, "limit": batch_size}).fetchall()
                if not rows:
                    break
                checker.feed(rows)
                if on_progress:
                    on_progress(checker.result.rows_checked, head_seq)
        return checker.finish()


async def verify_audit_chain_async(
    conn: psycopg.AsyncConnection, *, batch_size: int = BATCH_SIZE, on_progress: ProgressCallback | None = None,
) -> AuditVerification:
    """The same as `verify_audit_chain`, on an async connection."""
    own_snapshot = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    async with conn.transaction():
        if own_snapshot:
            await conn.execute(_BEGIN_SNAPSHOT)
        head_seq, head_hash = _read_head(await (await conn.execute(_HEAD)).fetchone())
        checker = _ChainChecker(head_seq, head_hash)
        async with conn.cursor(row_factory=dict_row) as cur:
            while True:
                await cur.execute(_BATCH, {"after": checker.last_seq, "limit": batch_size})
                rows = await cur.fetchall()
                if not rows:
                    break
                checker.feed(rows)
                if on_progress:
                    on_progress(checker.result.rows_checked, head_seq)
        return checker.finish()


async def list_audit_entries(
    conn: psycopg.AsyncConnection,
    *,
    limit: int,
    after: int = 0,
    table: str | None = None,
    record_id: int | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict]:
    """Up to limit + 1 audit rows with seq > after, in seq order. `since` is included, `until`
    is not. Hashes come back as hex, for comparing with an exported copy."""
    conditions = ["seq > %(after)s"]
    params: dict[str, Any] = {"after": after, "limit": limit + 1}
    for condition, name, value in (
        ("table_name = %(table)s", "table", table),
        ("record_id = %(record_id)s", "record_id", record_id),
        ("actor = %(actor)s", "actor", actor),
        ("changed_at >= %(since)s", "since", since),
        ("changed_at < %(until)s", "until", until),
    ):
        if value is not None:
            conditions.append(condition)
            params[name] = value
    # Only constant strings of this function are joined; values travel as parameters.
    query = f"""
        SELECT seq, table_name, record_id, operation, old_values, new_values, actor, request_id,
               changed_at, encode(prev_hash, 'hex') AS prev_hash, encode(row_hash, 'hex') AS row_hash
          FROM audit_change_log
         WHERE {' AND '.join(conditions)}
         ORDER BY seq
         LIMIT %(limit)s
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()
