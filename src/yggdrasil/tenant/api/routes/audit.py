"""The audit trail, for admins and auditors: who changed what, when, and whether the log's hash
chain is intact. Never cached: an auditor must see the log as it is now."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, StringConstraints

from yggdrasil.ops.audit import list_audit_entries, verify_audit_chain_async
from yggdrasil.tenant.api.deps import ServicesDep, require
from yggdrasil.tenant.api.fields import MAX_ID, text
from yggdrasil.tenant.auth import Principal

router = APIRouter(prefix="/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor", action="read the audit trail"))]
TableName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]


class AuditEntry(BaseModel):
    seq: int
    table_name: str
    record_id: int
    operation: str
    old_values: dict[str, Any] | None
    new_values: dict[str, Any] | None
    actor: str
    request_id: str | None
    changed_at: datetime
    prev_hash: str
    row_hash: str


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_after: int | None = None


class AuditProblemOut(BaseModel):
    seq: int
    kind: str
    problem: str


class AuditVerificationOut(BaseModel):
    ok: bool
    rows_checked: int
    head_seq: int
    problem_count: int
    problems: list[AuditProblemOut]


def _aware(moment: datetime | None) -> datetime | None:
    """A time without an offset is read as UTC, not as the database session's time zone."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


@router.get("", response_model=AuditPage, summary="Audit rows in chain order, filtered; page with `after` = last seq")
async def list_audit(
    services: ServicesDep, _: Auditor,
    limit: Annotated[int, Query(ge=1, le=500, description="page size (1-500)")] = 100,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="return rows with seq greater than this")] = 0,
    table: Annotated[TableName | None, Query(description="table name, e.g. customers")] = None,
    record_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="the changed row's id")] = None,
    actor: Annotated[text(100) | None, Query(description="user name, or 'system'")] = None,
    since: Annotated[datetime | None, Query(description="changed at or after (ISO 8601; UTC if no offset)")] = None,
    until: Annotated[datetime | None, Query(description="changed before (ISO 8601; UTC if no offset)")] = None,
) -> AuditPage:
    rows = await services.db.read(lambda conn: list_audit_entries(
        conn, limit=limit, after=after, table=table, record_id=record_id, actor=actor,
        since=_aware(since), until=_aware(until)))
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(items=rows, next_after=rows[-1]["seq"] if more and rows else None)


@router.get("/verify", response_model=AuditVerificationOut,
            summary="Recompute the hash chain; list every row edited or removed around the triggers")
async def verify_audit(services: ServicesDep, _: Auditor) -> AuditVerificationOut:
    result = await services.db.read(verify_audit_chain_async)
    return AuditVerificationOut(**result.as_dict())
