"""Support tickets and their comments. Every query names the organization as well as the id,
so a ticket id from another organization finds nothing."""

from __future__ import annotations

from psycopg import AsyncConnection

TICKET_SELECT = """
    SELECT t.id, t.organization_id, t.subject, t.body, t.status, t.created_at, t.updated_at, t.closed_at,
           t.opened_by, opener.display_name AS opened_by_name,
           t.assignee_id, assignee.display_name AS assignee_name,
           (SELECT count(*) FROM portal_ticket_comments c WHERE c.ticket_id = t.id) AS comment_count
      FROM portal_tickets t
      LEFT JOIN portal_users opener ON opener.id = t.opened_by
      LEFT JOIN portal_users assignee ON assignee.id = t.assignee_id
"""


async def insert_ticket(conn: AsyncConnection, organization_id: int, subject: str, body: str, opened_by: int) -> int:
    cur = await conn.execute(
        """
        INSERT INTO portal_tickets (organization_id, subject, body, opened_by)
        VALUES (%(org)s, %(subject)s, %(body)s, %(user)s) RETURNING id
        """,
        {"org": organization_id, "subject": subject, "body": body, "user": opened_by},
    )
    return (await cur.fetchone())["id"]


async def ticket(conn: AsyncConnection, organization_id: int, ticket_id: int) -> dict | None:
    cur = await conn.execute(TICKET_SELECT + " WHERE t.id = %(id)s AND t.organization_id = %(org)s",
                             {"id": ticket_id, "org": organization_id})
    return await cur.fetchone()


async def lock_ticket(conn: AsyncConnection, organization_id: int, ticket_id: int) -> dict | None:
    cur = await conn.execute(
        "SELECT id, status FROM portal_tickets WHERE id = %(id)s AND organization_id = %(org)s FOR UPDATE",
        {"id": ticket_id, "org": organization_id},
    )
    return await cur.fetchone()


async def tickets(conn: AsyncConnection, organization_id: int, status: str | None, after: int,
                  limit: int) -> list[dict]:
    cur = await conn.execute(
        TICKET_SELECT + """
         WHERE t.organization_id = %(org)s AND (%(status)s::text IS NULL OR t.status = %(status)s)
           AND t.id > %(after)s
         ORDER BY t.id LIMIT %(limit)s
        """,
        {"org": organization_id, "status": status, "after": after, "limit": limit},
    )
    return await cur.fetchall()


async def set_status(conn: AsyncConnection, ticket_id: int, status: str) -> None:
    await conn.execute(
        """
        UPDATE portal_tickets SET status = %(status)s, updated_at = now(),
               closed_at = CASE WHEN %(status)s = 'closed' THEN now() END
         WHERE id = %(id)s
        """,
        {"status": status, "id": ticket_id},
    )


async def set_assignee(conn: AsyncConnection, ticket_id: int, assignee_id: int | None) -> None:
    await conn.execute("UPDATE portal_tickets SET assignee_id = %(user)s, updated_at = now() WHERE id = %(id)s",
                       {"user": assignee_id, "id": ticket_id})


async def unassign_user(conn: AsyncConnection, organization_id: int, user_id: int) -> None:
    """Someone who leaves an organization (or stops being an admin) takes no tickets along."""
    await conn.execute(
        """
        UPDATE portal_tickets SET assignee_id = NULL, updated_at = now()
         WHERE organization_id = %(org)s AND assignee_id = %(user)s
        """,
        {"org": organization_id, "user": user_id},
    )


async def insert_comment(conn: AsyncConnection, ticket_id: int, author_id: int, body: str) -> dict:
    cur = await conn.execute(
        """
        WITH c AS (
            INSERT INTO portal_ticket_comments (ticket_id, author_id, body)
            VALUES (%(ticket)s, %(author)s, %(body)s)
            RETURNING id, ticket_id, author_id, body, created_at
        )
        SELECT c.*, u.display_name AS author_name FROM c LEFT JOIN portal_users u ON u.id = c.author_id
        """,
        {"ticket": ticket_id, "author": author_id, "body": body},
    )
    comment = await cur.fetchone()
    await conn.execute("UPDATE portal_tickets SET updated_at = now() WHERE id = %(id)s", {"id": ticket_id})
    return comment


async def comments(conn: AsyncConnection, ticket_id: int, after: int, limit: int) -> list[dict]:
    cur = await conn.execute(
        """
        SELECT c.id, c.ticket_id, c.author_id, u.display_name AS author_name, c.body, c.created_at
          FROM portal_ticket_comments c LEFT JOIN portal_users u ON u.id = c.author_id
         WHERE c.ticket_id = %(ticket)s AND c.id > %(after)s
         ORDER BY c.id LIMIT %(limit)s
        """,
        {"ticket": ticket_id, "after": after, "limit": limit},
    )
    return await cur.fetchall()
