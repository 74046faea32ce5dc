"""The demo's coordination-plane seeding on a real ygg_central database: it registers the demo
tenants and their partnerships at the mesh and gives each an organization, an owner, a
subscription and a ticket in the portal; run again, it adds nothing, follows changed URLs and
keys, leaves alone what someone changed on purpose, and sets a changed owner password back."""

from __future__ import annotations

import psycopg
import pytest

from yggdrasil.devstack.seed import (
    PARTNERSHIP_MODULES,
    PARTNERSHIP_POLICY,
    PORTAL_PLAN,
    PortalOwner,
    RegistryTenant,
    owner_email,
    register_in_mesh,
    seed_portal_organization,
)
from yggdrasil.events.signing import encode_public_key, generate_keypair
from yggdrasil.mesh.adapters import registry
from yggdrasil.portal.adapters import connect
from yggdrasil.portal.domain.accounts import Passwords

pytestmark = pytest.mark.integration

COUNTED = ("tenants", "mesh_partners", "organizations", "portal_users", "portal_memberships",
           "portal_subscriptions", "portal_tickets")


def public_key() -> str:
    return encode_public_key(generate_keypair()[1])


def cheap_passwords() -> Passwords:
    return Passwords(time_cost=1, memory_kib=1024, parallelism=1)


async def counts(conn: psycopg.AsyncConnection) -> dict[str, int]:
    result = {}
    for table in COUNTED:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")  # noqa: S608 - our names
        result[table] = (await cur.fetchone())["n"]
    return result


async def test_registry_seeding_registers_tenants_and_pairs_once_and_follows_new_urls(central_dsn: str) -> None:
    keys = {t: public_key() for t in ("acme", "bravo", "charlie")}
    tenants = [RegistryTenant(t, t.upper(), f"http://127.0.0.1:{9000 + n}", keys[t], f"/state#{t}")
               for n, t in enumerate(keys)]
    async with await connect(central_dsn) as conn:
        done = await register_in_mesh(conn, tenants)
        assert len(done) == 3 + 3  # three tenants, three pairs
        pairs = await registry.list_partnerships(conn, limit=100)
        assert sorted((p["tenant_low"], p["tenant_high"]) for p in pairs) == [
            ("acme", "bravo"), ("acme", "charlie"), ("bravo", "charlie")]
        assert {(p["status"], p["approval_policy"], tuple(p["modules"])) for p in pairs} == {
            ("active", PARTNERSHIP_POLICY, PARTNERSHIP_MODULES)}
        listed = await registry.registry_partners(conn, "acme")
        assert [(p.public()["tenant_id"], p.public()["status"]) for p in listed] == [
            ("bravo", "active"), ("charlie", "active")]

        # Again, unchanged: nothing to do.
        before = await counts(conn)
        assert await register_in_mesh(conn, tenants) == []
        assert await counts(conn) == before

        # The next run got another port for acme and a new key for bravo; someone ended the
        # bravo-charlie partnership and suspended charlie meanwhile: that stays as it is.
        [ended] = [p for p in pairs if (p["tenant_low"], p["tenant_high"]) == ("bravo", "charlie")]
        await registry.act_on_partnership(conn, ended["id"], "end")
        await registry.change_tenant_status(conn, "charlie", "suspend")
        bravo_key = public_key()
        moved = [RegistryTenant("acme", "ACME", "http://127.0.0.1:9100", keys["acme"], "/state#acme"),
                 RegistryTenant("bravo", "BRAVO", "http://127.0.0.1:9001", bravo_key, "/state#bravo"),
                 tenants[2]]
        done = await register_in_mesh(conn, moved)
        assert done == ["updated tenant acme: api_url", "updated tenant bravo: public_key"]
        assert (await registry.get_tenant(conn, "acme"))["api_url"] == "http://127.0.0.1:9100"
        assert (await registry.get_tenant(conn, "bravo"))["public_key"] == bravo_key
        assert (await registry.get_tenant(conn, "charlie"))["status"] == "suspended"
        assert (await registry.get_partnership(conn, ended["id"]))["status"] == "ended"
        assert await counts(conn) == before


async def test_portal_seeding_makes_an_owned_organization_with_an_owner_once(central_dsn: str) -> None:
    passwords = cheap_passwords()
    acme = PortalOwner("acme", "acme", owner_email("acme"), "first demo password")
    async with await connect(central_dsn) as conn:
        await register_in_mesh(conn, [RegistryTenant("acme", "ACME", "http://127.0.0.1:9000", public_key()),
                                      RegistryTenant("bravo", "BRAVO", "http://127.0.0.1:9001", public_key())])
        done = await seed_portal_organization(conn, passwords, "acme", "ACME Seller", acme)
        assert len(done) == 5, done  # organization, ownership, user, membership, ticket
        cur = await conn.execute(
            """
            SELECT o.slug, o.name, t.id AS tenant, u.email, m.role, s.plan, s.status,
                   (SELECT count(*) FROM portal_tickets k WHERE k.organization_id = o.id) AS tickets
              FROM organizations o
              JOIN tenants t ON t.organization_id = o.id
              JOIN portal_memberships m ON m.organization_id = o.id
              JOIN portal_users u ON u.id = m.user_id
              JOIN portal_subscriptions s ON s.organization_id = o.id
            """)
        assert await cur.fetchall() == [{"slug": "acme", "name": "ACME Seller", "tenant": "acme",
                                         "email": "owner@acme.example", "role": "owner", "plan": PORTAL_PLAN,
                                         "status": "trialing", "tickets": 1}]

        # Again: nothing to do, nothing added.
        before = await counts(conn)
        assert await seed_portal_organization(conn, passwords, "acme", "ACME Seller", acme) == []
        assert await counts(conn) == before

        # The owner changed the password in the portal: the demo sets back the one it prints.
        cur = await conn.execute("UPDATE portal_users SET password_hash = %s WHERE email = %s",
                                 (passwords.hash("changed by hand"), acme.email))
        assert await seed_portal_organization(conn, passwords, "acme", "ACME Seller", acme) == [
            "password of owner@acme.example set back to the demo's"]
        cur = await conn.execute("SELECT password_hash FROM portal_users WHERE email = %s", (acme.email,))
        assert passwords.verify((await cur.fetchone())["password_hash"], acme.password)[0]

        # A tenant someone moved to another organization stays there; no sample ticket without seeding.
        await conn.execute("INSERT INTO organizations (slug, name) VALUES ('holding', 'Holding')")
        await conn.execute("UPDATE tenants SET organization_id = (SELECT id FROM organizations WHERE slug = 'holding') "
                           "WHERE id = 'bravo'")
        bravo = PortalOwner("bravo", "bravo", owner_email("bravo"), "bravo demo password")
        done = await seed_portal_organization(conn, passwords, "bravo", "BRAVO Buyer", bravo, sample_ticket=False)
        assert done == ["organization bravo with a business trial subscription", "user owner@bravo.example",
                        "owner@bravo.example owner of bravo"]
        cur = await conn.execute("SELECT o.slug FROM tenants t JOIN organizations o ON o.id = t.organization_id "
                                 "WHERE t.id = 'bravo'")
        assert (await cur.fetchone())["slug"] == "holding"
