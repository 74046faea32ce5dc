"""Organizations, memberships, the tenants an organization owns, and the portal's event trail.

Every read that starts from a user goes through `organization_for_member`: an organization is
found only through the caller's membership, which is what keeps organizations apart."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

ORG_COLUMNS = "o.id, o.slug, o.name, o.created_at, o.updated_at"


async def insert_organization(conn: AsyncConnection, slug: str, name: str) -> dict:
    """Raises psycopg.errors.UniqueViolation when the slug is taken."""
    cur = await conn.execute(
        f"INSERT INTO organizations AS o (slug, name) VALUES (%(slug)s, %(name)s) RETURNING {ORG_COLUMNS}",
        {"slug": slug, "name": name},
    )
    return await cur.fetchone()


async def organization_by_slug(conn: AsyncConnection, slug: str) -> dict | None:
    """For operators (the CLI) only: no membership check."""
    cur = await conn.execute(f"SELECT {ORG_COLUMNS} FROM organizations o WHERE o.slug = %(slug)s", {"slug": slug})
    return await cur.fetchone()


async def organization_for_member(conn: AsyncConnection, slug: str, user_id: int) -> dict | None:
    """The organization with the caller's role in it, or None if it does not exist or the
    caller is not a member (the two are not told apart)."""
    cur = await conn.execute(
        f"""
        SELECT {ORG_COLUMNS}, m.role
          FROM organizations o JOIN portal_memberships m ON m.organization_id = o.id
         WHERE o.slug = %(slug)s AND m.user_id = %(user)s
        """,
        {"slug": slug, "user": user_id},
    )
    return await cur.fetchone()


async def organizations_of_user(conn: AsyncConnection, user_id: int, after: int, limit: int) -> list[dict]:
    cur = await conn.execute(
        f"""
        SELECT {ORG_COLUMNS}, m.role
          FROM organizations o JOIN portal_memberships m ON m.organization_id = o.id
         WHERE m.user_id = %(user)s AND o.id > %(after)s
         ORDER BY o.id LIMIT %(limit)s
        """,
        {"user": user_id, "after": after, "limit": limit},
    )
    return await cur.fetchall()


async def rename_organization(conn: AsyncConnection, organization_id: int, name: str) -> None:
    await conn.execute("UPDATE organizations SET name = %(name)s, updated_at = now() WHERE id = %(id)s",
                       {"name": name, "id": organization_id})


async def delete_organization(conn: AsyncConnection, organization_id: int) -> None:
    """Memberships, the subscription and tickets go with it (ON DELETE CASCADE)."""
    await conn.execute("DELETE FROM organizations WHERE id = %(id)s", {"id": organization_id})


# -- memberships -----------------------------------------------------------------------------

async def members(conn: AsyncConnection, organization_id: int, after: int, limit: int) -> list[dict]:
    cur = await conn.execute(
        """
        SELECT u.id AS user_id, u.email, u.display_name, u.active, m.role, m.created_at AS joined_at
          FROM portal_memberships m JOIN portal_users u ON u.id = m.user_id
         WHERE m.organization_id = %(org)s AND u.id > %(after)s
         ORDER BY u.id LIMIT %(limit)s
        """,
        {"org": organization_id, "after": after, "limit": limit},
    )
    return await cur.fetchall()


async def member(conn: AsyncConnection, organization_id: int, user_id: int, lock: bool = False) -> dict | None:
    cur = await conn.execute(
        """
        SELECT u.id AS user_id, u.email, u.display_name, u.active, m.role, m.created_at AS joined_at
          FROM portal_memberships m JOIN portal_users u ON u.id = m.user_id
         WHERE m.organization_id = %(org)s AND m.user_id = %(user)s
        """ + (" FOR UPDATE OF m" if lock else ""),
        {"org": organization_id, "user": user_id},
    )
    return await cur.fetchone()


async def count_members(conn: AsyncConnection, organization_id: int, role: str | None = None) -> int:
    cur = await conn.execute(
        """
        SELECT count(*) AS n FROM portal_memberships
         WHERE organization_id = %(org)s AND (%(role)s::text IS NULL OR role = %(role)s)
        """,
        {"org": organization_id, "role": role},
    )
    return (await cur.fetchone())["n"]


async def insert_membership(conn: AsyncConnection, organization_id: int, user_id: int, role: str) -> None:
    """Raises psycopg.errors.UniqueViolation if the user is a member already."""
    await conn.execute(
        "INSERT INTO portal_memberships (organization_id, user_id, role) VALUES (%(org)s, %(user)s, %(role)s)",
        {"org": organization_id, "user": user_id, "role": role},
    )


async def set_role(conn: AsyncConnection, organization_id: int, user_id: int, role: str) -> None:
    await conn.execute(
        "UPDATE portal_memberships SET role = %(role)s WHERE organization_id = %(org)s AND user_id = %(user)s",
        {"org": organization_id, "user": user_id, "role": role},
    )


async def delete_membership(conn: AsyncConnection, organization_id: int, user_id: int) -> None:
    await conn.execute(
        "DELETE FROM portal_memberships WHERE organization_id = %(org)s AND user_id = %(user)s",
        {"org": organization_id, "user": user_id},
    )


async def lock_organization(conn: AsyncConnection, organization_id: int) -> None:
    """Serialize membership changes of one organization (seat and last-owner checks count
    rows that a concurrent change could alter)."""
    await conn.execute("SELECT 1 FROM organizations WHERE id = %(id)s FOR UPDATE", {"id": organization_id})


# -- tenants ---------------------------------------------------------------------------------

async def tenants_of(conn: AsyncConnection, organization_id: int) -> list[dict]:
    cur = await conn.execute(
        """
        SELECT id, name, status, api_url, created_at FROM tenants
         WHERE organization_id = %(org)s ORDER BY id
        """,
        {"org": organization_id},
    )
    return await cur.fetchall()


async def attach_tenant(conn: AsyncConnection, organization_id: int, tenant_id: str) -> bool:
    cur = await conn.execute(
        "UPDATE tenants SET organization_id = %(org)s, updated_at = now() WHERE id = %(tenant)s",
        {"org": organization_id, "tenant": tenant_id},
    )
    return cur.rowcount == 1


# -- event trail -----------------------------------------------------------------------------

async def record_event(conn: AsyncConnection, organization_id: int | None, user_id: int | None, action: str,
                       **detail: object) -> None:
    await conn.execute(
        """
        INSERT INTO portal_events (organization_id, user_id, action, detail)
        VALUES (%(org)s, %(user)s, %(action)s, %(detail)s)
        """,
        {"org": organization_id, "user": user_id, "action": action, "detail": Jsonb(detail)},
    )


async def events_of(conn: AsyncConnection, organization_id: int, after: int, limit: int) -> list[dict]:
    cur = await conn.execute(
        """
        SELECT e.id, e.occurred_at, e.action, e.detail, e.user_id, u.display_name AS user_display_name
          FROM portal_events e LEFT JOIN portal_users u ON u.id = e.user_id
         WHERE e.organization_id = %(org)s AND e.id > %(after)s
         ORDER BY e.id LIMIT %(limit)s
        """,
        {"org": organization_id, "after": after, "limit": limit},
    )
    return await cur.fetchall()
