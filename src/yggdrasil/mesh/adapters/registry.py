"""The registry's SQL: tenants and partnerships in `ygg_central` (0001_mesh_registry.sql).

Every function takes an open `psycopg.AsyncConnection` and does its work in one transaction
(a savepoint when the caller already has one open), so a CLI or another component can call
them too: `async with await psycopg.AsyncConnection.connect(dsn) as conn: await
register_tenant(conn, ...)`. They raise the mesh's domain errors (yggdrasil.mesh.errors):
NotFound, Conflict, InvalidInput.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row

from yggdrasil.mesh.domain import registry as rules
from yggdrasil.mesh.errors import Conflict, InvalidInput, NotFound

Row = dict[str, Any]

_TENANT_COLUMNS = """
    id, name, api_url, public_key, key_id, broker_credentials_ref, status, status_changed_at,
    created_at, updated_at
"""


# -- tenants --------------------------------------------------------------------------------------

async def get_tenant(conn: psycopg.AsyncConnection, tenant_id: str) -> Row:
    """The tenant's row; raises NotFound."""
    row = await _fetch_one(conn, f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = %(id)s", {"id": tenant_id})
    if row is None:
        raise NotFound("tenant.not_found", f"no tenant {tenant_id!r} in the registry")
    return row


async def list_tenants(conn: psycopg.AsyncConnection, *, status: str | None = None, after: str | None = None,
                       limit: int = 100) -> list[Row]:
    """Tenants ordered by id after the cursor `after`; up to `limit` + 1 rows (the extra one
    says there is another page)."""
    return await _fetch_all(
        conn,
        f"""
        SELECT {_TENANT_COLUMNS} FROM tenants
         WHERE (%(status)s::text IS NULL OR status = %(status)s)
           AND (%(after)s::text IS NULL OR id > %(after)s)
         ORDER BY id LIMIT %(limit)s
        """,
        {"status": status, "after": after, "limit": limit + 1},
    )


async def register_tenant(conn: psycopg.AsyncConnection, *, tenant_id: str, name: str, api_url: str,
                          public_key: str, broker_credentials_ref: str = "") -> Row:
    """Add a tenant (status active). Raises InvalidInput for a malformed field, Conflict if
    the id is taken (by a tenant in any status: departed ids are not reused)."""
    values = {
        "id": rules.validate_tenant_id(tenant_id), "name": rules.validate_name(name),
        "api_url": rules.validate_api_url(api_url), "public_key": public_key,
        "key_id": rules.key_id_of(public_key), "ref": _credentials_ref(broker_credentials_ref),
    }
    try:
        async with conn.transaction():
            row = await _fetch_one(
                conn,
                f"""
                INSERT INTO tenants (id, name, api_url, public_key, key_id, broker_credentials_ref)
                VALUES (%(id)s, %(name)s, %(api_url)s, %(public_key)s, %(key_id)s, %(ref)s)
                RETURNING {_TENANT_COLUMNS}
                """,
                values,
            )
    except pg_errors.UniqueViolation:
        existing = await get_tenant(conn, tenant_id)
        raise Conflict("tenant.exists", f"tenant {tenant_id!r} is already registered ({existing['status']})") from None
    assert row is not None
    return row


async def update_tenant(conn: psycopg.AsyncConnection, tenant_id: str, *, name: str | None = None,
                        api_url: str | None = None, public_key: str | None = None,
                        broker_credentials_ref: str | None = None) -> Row:
    """Change the given fields (a new public key gets its key id). Raises NotFound, InvalidInput,
    Conflict for a departed tenant (its registry entry is a record, not a live one)."""
    changes: dict[str, object] = {}
    if name is not None:
        changes["name"] = rules.validate_name(name)
    if api_url is not None:
        changes["api_url"] = rules.validate_api_url(api_url)
    if public_key is not None:
        changes["public_key"] = public_key
        changes["key_id"] = rules.key_id_of(public_key)
    if broker_credentials_ref is not None:
        changes["broker_credentials_ref"] = _credentials_ref(broker_credentials_ref)
    async with conn.transaction():
        current = await _locked_tenant(conn, tenant_id)
        if current["status"] == "departed":
            raise Conflict("tenant.departed", f"tenant {tenant_id} has departed; its entry can no longer change")
        if not changes:
            return current
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
            for column in changes
        )
        row = await _fetch_one(
            conn,
            sql.SQL("UPDATE tenants SET {}, updated_at = now() WHERE id = %(id)s RETURNING {}").format(
                assignments, sql.SQL(_TENANT_COLUMNS)),
            {**changes, "id": tenant_id},
        )
    assert row is not None
    return row


async def change_tenant_status(conn: psycopg.AsyncConnection, tenant_id: str, action: str) -> Row:
    """Apply `suspend`, `reactivate` or `depart`. Raises NotFound, Conflict for a transition
    that does not apply (say, reactivating a departed tenant)."""
    async with conn.transaction():
        current = await _locked_tenant(conn, tenant_id)
        target = rules.tenant_transition(tenant_id, current["status"], action)
        return await _write_tenant_status(conn, tenant_id, target)


async def set_tenant_status(conn: psycopg.AsyncConnection, tenant_id: str, status: str) -> Row:
    """Bring the tenant to `status` (active, suspended, departed); does nothing if it is there
    already, so a retried departure is harmless. Raises NotFound, InvalidInput for an unknown
    status, Conflict for a transition that does not apply."""
    action = {"active": "reactivate", "suspended": "suspend", "departed": "depart"}.get(status)
    if action is None:
        raise InvalidInput("tenant.invalid_status", f"status must be one of {', '.join(rules.TENANT_STATUSES)}")
    async with conn.transaction():
        current = await _locked_tenant(conn, tenant_id)
        if current["status"] == status:
            return current
        rules.tenant_transition(tenant_id, current["status"], action)
        return await _write_tenant_status(conn, tenant_id, status)


async def _write_tenant_status(conn: psycopg.AsyncConnection, tenant_id: str, status: str) -> Row:
    row = await _fetch_one(
        conn,
        f"""
        UPDATE tenants SET status = %(status)s, status_changed_at = now(), updated_at = now()
         WHERE id = %(id)s RETURNING {_TENANT_COLUMNS}
        """,
        {"id": tenant_id, "status": status},
    )
    assert row is not None
    return row


async def _locked_tenant(conn: psycopg.AsyncConnection, tenant_id: str) -> Row:
    row = await _fetch_one(conn, f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = %(id)s FOR UPDATE",
                           {"id": tenant_id})
    if row is None:
        raise NotFound("tenant.not_found", f"no tenant {tenant_id!r} in the registry")
    return row


def _credentials_ref(ref: str) -> str:
    if len(ref) > 500:
        raise InvalidInput("tenant.invalid_credentials_ref", "broker_credentials_ref must be at most 500 characters")
    return ref


# -- partnerships ---------------------------------------------------------------------------------

_PARTNERSHIP_COLUMNS = """
    id, tenant_low, tenant_high, proposed_by,
    CASE WHEN proposed_by = tenant_low THEN tenant_high ELSE tenant_low END AS invited,
    modules, approval_policy, status, accepted_at, created_at, updated_at
"""
_PAIR = "WHERE tenant_low = %(low)s AND tenant_high = %(high)s"


async def get_partnership(conn: psycopg.AsyncConnection, partnership_id: int) -> Row:
    row = await _fetch_one(conn, f"SELECT {_PARTNERSHIP_COLUMNS} FROM mesh_partners WHERE id = %(id)s",
                           {"id": partnership_id})
    if row is None:
        raise NotFound("partnership.not_found", f"no partnership {partnership_id}")
    return row


async def list_partnerships(conn: psycopg.AsyncConnection, *, tenant_id: str | None = None,
                            status: str | None = None, after: int = 0, limit: int = 100) -> list[Row]:
    return await _fetch_all(
        conn,
        f"""
        SELECT {_PARTNERSHIP_COLUMNS} FROM mesh_partners
         WHERE (%(tenant)s::text IS NULL OR %(tenant)s IN (tenant_low, tenant_high))
           AND (%(status)s::text IS NULL OR status = %(status)s)
           AND id > %(after)s
         ORDER BY id LIMIT %(limit)s
        """,
        {"tenant": tenant_id, "status": status, "after": after, "limit": limit + 1},
    )


async def propose_partnership(conn: psycopg.AsyncConnection, *, proposed_by: str, partner: str,
                              modules: list[str], approval_policy: str) -> Row:
    """Tenant `proposed_by` proposes trading with `partner`. A pair whose earlier partnership
    ended or was declined gets a fresh proposal in the same row. Raises InvalidInput (unknown
    tenant, a tenant with itself, bad modules or policy), Conflict (a tenant that is not
    active, or a partnership or proposal the pair already has)."""
    modules = rules.validate_modules(modules)
    rules.validate_policy(approval_policy)
    if proposed_by == partner:
        raise InvalidInput("partnership.same_tenant", f"{proposed_by} cannot be its own partner")
    low, high = rules.ordered_pair(proposed_by, partner)
    try:
        async with conn.transaction():
            tenants = {row["id"]: row["status"] for row in await _fetch_all(
                conn, "SELECT id, status FROM tenants WHERE id IN (%(a)s, %(b)s) FOR SHARE", {"a": low, "b": high})}
            for tenant in (proposed_by, partner):
                if tenant not in tenants:
                    raise InvalidInput("partnership.unknown_tenant", f"no tenant {tenant!r} in the registry")
                if tenants[tenant] != "active":
                    raise Conflict("partnership.tenant_not_active",
                                   f"tenant {tenant} is {tenants[tenant]}; only active tenants can start a partnership")
            existing = await _fetch_one(
                conn,
                f"SELECT {_PARTNERSHIP_COLUMNS} FROM mesh_partners {_PAIR} FOR UPDATE",
                {"low": low, "high": high},
            )
            values = {"low": low, "high": high, "by": proposed_by, "modules": modules, "policy": approval_policy}
            if existing is None:
                row = await _fetch_one(
                    conn,
                    f"""
                    INSERT INTO mesh_partners (tenant_low, tenant_high, proposed_by, modules, approval_policy)
                    VALUES (%(low)s, %(high)s, %(by)s, %(modules)s, %(policy)s)
                    RETURNING {_PARTNERSHIP_COLUMNS}
                    """,
                    values,
                )
            elif existing["status"] in rules.REPROPOSABLE:
                row = await _fetch_one(
                    conn,
                    f"""
                    UPDATE mesh_partners
                       SET proposed_by = %(by)s, modules = %(modules)s, approval_policy = %(policy)s,
                           status = 'proposed', accepted_at = NULL, updated_at = now()
                     WHERE id = %(id)s
                    RETURNING {_PARTNERSHIP_COLUMNS}
                    """,
                    {**values, "id": existing["id"]},
                )
            else:
                raise _exists(existing)
    except pg_errors.UniqueViolation:
        # Two proposals for one pair at the same moment: the other one won.
        raise _exists(await _fetch_one(
            conn, f"SELECT {_PARTNERSHIP_COLUMNS} FROM mesh_partners {_PAIR}",
            {"low": low, "high": high})) from None
    assert row is not None
    return row


def _exists(existing: Row | None) -> Conflict:
    if existing is None:
        return Conflict("partnership.exists", "a partnership for this pair already exists")
    return Conflict("partnership.exists",
                    f"{existing['tenant_low']} and {existing['tenant_high']} already have partnership {existing['id']} "
                    f"(proposed by {existing['proposed_by']}, {existing['status']}); "
                    f"accept, decline or end it instead of proposing again")


async def act_on_partnership(conn: psycopg.AsyncConnection, partnership_id: int, action: str,
                             by: str | None = None) -> Row:
    """Apply accept, decline (both need `by`, the invited side), suspend, resume or end.
    Raises NotFound, InvalidInput (wrong side), Conflict (a transition that does not apply)."""
    async with conn.transaction():
        current = await _fetch_one(
            conn, f"SELECT {_PARTNERSHIP_COLUMNS} FROM mesh_partners WHERE id = %(id)s FOR UPDATE",
            {"id": partnership_id})
        if current is None:
            raise NotFound("partnership.not_found", f"no partnership {partnership_id}")
        if action in rules.ANSWERS:
            if by is None:
                raise InvalidInput("partnership.by_required", f"say which tenant answers: {action} needs 'by'")
            rules.check_answering_side(partnership_id, current["proposed_by"],
                                       (current["tenant_low"], current["tenant_high"]), by, action)
        target = rules.partnership_transition(partnership_id, current["status"], action)
        row = await _fetch_one(
            conn,
            f"""
            UPDATE mesh_partners
               SET status = %(status)s, updated_at = now(),
                   accepted_at = CASE WHEN %(accepting)s THEN now() ELSE accepted_at END
             WHERE id = %(id)s
            RETURNING {_PARTNERSHIP_COLUMNS}
            """,
            {"id": partnership_id, "status": target, "accepting": action == "accept"},
        )
    assert row is not None
    return row


# -- the registry's public part -------------------------------------------------------------------

async def registry_partners(conn: psycopg.AsyncConnection, tenant_id: str) -> list[rules.RegistryPartner]:
    """The partners of `tenant_id` a sidecar should know about: the other side of every
    partnership that is active, suspended or ended. Raises NotFound for an unknown tenant."""
    await get_tenant(conn, tenant_id)
    rows = await _fetch_all(
        conn,
        """
        SELECT t.id AS tenant_id, t.name, t.public_key, t.key_id, p.approval_policy, p.modules,
               t.status AS tenant_status, p.status AS partnership_status
          FROM mesh_partners p
          JOIN tenants t ON t.id = CASE WHEN p.tenant_low = %(id)s THEN p.tenant_high ELSE p.tenant_low END
         WHERE %(id)s IN (p.tenant_low, p.tenant_high) AND p.status = ANY(%(listed)s)
         ORDER BY t.id
        """,
        {"id": tenant_id, "listed": list(rules.LISTED_IN_REGISTRY)},
    )
    return [rules.RegistryPartner(**{**row, "modules": tuple(row["modules"])}) for row in rows]


# -- helpers --------------------------------------------------------------------------------------

async def _fetch_one(conn: psycopg.AsyncConnection, query: Any, params: dict[str, object]) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def _fetch_all(conn: psycopg.AsyncConnection, query: Any, params: dict[str, object]) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
