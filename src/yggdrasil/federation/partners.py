"""The local partner registry (`b2b_partners`): who may send us events, with which key, and
whether their documents need a person's approval. The relay reads only this local copy, so
nothing outside the tenant can stop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.rows import dict_row

from yggdrasil.broker.subjects import validate_tenant_id
from yggdrasil.events.signing import decode_public_key, key_id

APPROVAL_POLICIES = ("auto", "approve")
STATUSES = ("active", "suspended", "departed")


@dataclass(frozen=True)
class Partner:
    tenant_id: str
    name: str
    public_key_text: str
    key_id: str
    approval_policy: str
    status: str
    # The modules whose events the partner may send us (`b2b` is always accepted: see relay.py).
    modules: tuple[str, ...] = ("sales", "purchasing", "b2b")

    @property
    def public_key(self) -> Ed25519PublicKey:
        return _decoded(self.public_key_text)

    @property
    def active(self) -> bool:
        return self.status == "active"


@lru_cache(maxsize=1024)
def _decoded(text: str) -> Ed25519PublicKey:
    return decode_public_key(text)


async def load_partners(conn: psycopg.AsyncConnection) -> dict[str, Partner]:
    """Every registered partner, by tenant id (the registry is small: one row per trading
    partner), read once per inbound batch."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT tenant_id, name, public_key AS public_key_text, key_id, approval_policy, status, modules "
            "FROM b2b_partners"
        )
        return {row["tenant_id"]: Partner(**{**row, "modules": tuple(row["modules"])}) for row in await cur.fetchall()}


async def add_partner(
    conn: psycopg.AsyncConnection,
    *,
    tenant_id: str,
    public_key: str,
    name: str = "",
    approval_policy: str = "approve",
) -> Partner:
    """Register a partner, or replace its key, name and policy (key rotation) and reactivate it.
    A new row is `local`; a row the mesh's registry sync manages stays `mesh` and follows the
    registry again at the next sync (see registry_sync.py for which source wins).

    Raises ValueError for a malformed tenant id, public key or policy."""
    validate_tenant_id(tenant_id)
    if approval_policy not in APPROVAL_POLICIES:
        raise ValueError(f"approval policy must be one of {', '.join(APPROVAL_POLICIES)}")
    decoded = decode_public_key(public_key)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            INSERT INTO b2b_partners (tenant_id, name, public_key, key_id, approval_policy)
            VALUES (%(tenant_id)s, %(name)s, %(public_key)s, %(key_id)s, %(policy)s)
            ON CONFLICT (tenant_id) DO UPDATE
               SET name = EXCLUDED.name, public_key = EXCLUDED.public_key, key_id = EXCLUDED.key_id,
                   approval_policy = EXCLUDED.approval_policy, status = 'active', updated_at = now()
            RETURNING tenant_id, name, public_key AS public_key_text, key_id, approval_policy, status, modules
            """,
            {"tenant_id": tenant_id, "name": name or tenant_id, "public_key": public_key,
             "key_id": key_id(decoded), "policy": approval_policy},
        )
        row = await cur.fetchone()
    assert row is not None
    return Partner(**{**row, "modules": tuple(row["modules"])})


async def set_partner_status(conn: psycopg.AsyncConnection, tenant_id: str, status: str) -> bool:
    """Suspend, reactivate or mark departed; returns whether the partner exists."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    cur = await conn.execute(
        "UPDATE b2b_partners SET status = %s, updated_at = now() WHERE tenant_id = %s", (status, tenant_id)
    )
    return cur.rowcount == 1


async def map_partner_item(conn: psycopg.AsyncConnection, *, tenant_id: str, partner_sku: str, item_sku: str) -> int:
    """Map the partner's SKU to our item (given by our SKU); returns the item id.

    Raises LookupError if we have no item with `item_sku`, psycopg's ForeignKeyViolation if
    the partner is not registered."""
    cur = await conn.execute(
        """
        INSERT INTO b2b_partner_items (partner_tenant_id, partner_sku, item_id)
        SELECT %(tenant)s, %(partner_sku)s, id FROM items WHERE sku = %(item_sku)s
        ON CONFLICT (partner_tenant_id, partner_sku) DO UPDATE SET item_id = EXCLUDED.item_id
        RETURNING item_id
        """,
        {"tenant": tenant_id, "partner_sku": partner_sku, "item_sku": item_sku},
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(f"no item with SKU {item_sku!r}")
    return row[0]
