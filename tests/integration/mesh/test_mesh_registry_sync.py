"""The sidecar's registry sync against a real `ygg mesh serve`: partners written into the
tenant database, a suspension at the mesh refused locally after the next sync, a SIGKILLed
mesh leaving the local copy untouched while the sync fails visibly and backs off, and the sync
resuming when the mesh is back on its port."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
from conftest import make_settings, open_api
from mesh_harness import admin_token, bearer, mesh_server, public_key, register, running, wait_until

from yggdrasil.devstack.ports import free_port
from yggdrasil.events.signing import decode_public_key, key_id
from yggdrasil.events.errors import EnvelopeMalformed
from yggdrasil.federation.errors import PartnerInactive, PartnerModuleNotAgreed
from yggdrasil.federation.partners import add_partner, load_partners
from yggdrasil.federation.registry_sync import RegistryEntry, apply_registry
from yggdrasil.federation.relay import InboundMessage, verify_message
from yggdrasil.federation.sidecar import run_sidecar
from yggdrasil.federation.status import SidecarStatus
from yggdrasil.mesh.adapters.registry import act_on_partnership, propose_partnership
from yggdrasil.settings import Settings

pytestmark = pytest.mark.integration

INTERVAL = 0.3
BACKOFF_MAX = 1.2
LOCAL_ROWS = "SELECT tenant_id, name, public_key, approval_policy, status, source FROM b2b_partners ORDER BY tenant_id"


async def _rows(dsn: str, query: str = LOCAL_ROWS) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await (await conn.execute(query)).fetchall()


async def _by_tenant(dsn: str) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in await _rows(dsn)}


async def _sync_state(dsn: str) -> dict[str, object]:
    from yggdrasil.federation.registry_sync import load_sync_state

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        state = await load_sync_state(conn)
    assert state is not None
    return state


async def _trade(central_dsn: str, proposer: str, partner: str, policy: str = "approve") -> int:
    async with await psycopg.AsyncConnection.connect(central_dsn) as conn:
        proposal = await propose_partnership(conn, proposed_by=proposer, partner=partner,
                                             modules=["sales", "purchasing"], approval_policy=policy)
        await act_on_partnership(conn, proposal["id"], "accept", by=partner)
        return proposal["id"]


async def test_sidecar_keeps_a_synced_partner_copy_and_trades_on_it_while_the_mesh_is_down(
        central_dsn: str, tenant_dsn: str, tmp_path, signing_key_file) -> None:
    keys = {tenant: public_key() for tenant in ("acme", "bravo", "charlie")}
    for tenant, key in keys.items():
        await register(central_dsn, tenant, f"http://127.0.0.1:9/{tenant}", key)
    bravo_partnership = await _trade(central_dsn, "acme", "bravo", policy="auto")
    await _trade(central_dsn, "charlie", "acme")
    async with await psycopg.AsyncConnection.connect(tenant_dsn, autocommit=True) as conn:
        # Added by hand before the mesh existed: bravo with a key since rotated at the mesh,
        # and delta, a partner the mesh does not know.
        await add_partner(conn, tenant_id="bravo", public_key=public_key(), name="Bravo (by hand)")
        await add_partner(conn, tenant_id="delta", public_key=(delta_key := public_key()), name="Delta Local")

    mesh = mesh_server(central_dsn, free_port(), tmp_path, YGG_MESH_HEALTH_ENABLED="false")
    settings = Settings(tenant_dsn=tenant_dsn, tenant_id="acme", mesh_url=mesh.url, signing_key_path=signing_key_file,
                        registry_sync_interval_seconds=INTERVAL, registry_sync_backoff_max_seconds=BACKOFF_MAX,
                        registry_sync_timeout_seconds=1.0, broker_url=f"nats://127.0.0.1:{free_port()}",
                        log_json=False)
    stop, status = asyncio.Event(), SidecarStatus()
    with running(mesh):
        sidecar = asyncio.create_task(run_sidecar(settings, stop=stop, status=status))
        try:
            # The registry is written into the tenant database; the mesh wins for bravo.
            assert await wait_until(lambda: status.registry.state == "synced", 20), status.registry
            assert await _by_tenant(tenant_dsn) == {
                "bravo": ("BRAVO Ltd", keys["bravo"], "auto", "active", "mesh"),
                "charlie": ("CHARLIE Ltd", keys["charlie"], "approve", "active", "mesh"),
                "delta": ("Delta Local", delta_key, "approve", "active", "local"),
            }
            state = await _sync_state(tenant_dsn)
            assert state["etag"] == status.registry.etag and state["partners"] == 2 and state["mesh_url"] == mesh.url
            # Unchanged registry: the next polls are 304s.
            assert await wait_until(lambda: status.registry.not_modified_total >= 2, 10)
            assert status.registry.changed_total == 1

            # Suspended at the mesh, through its admin API: suspended here after the next sync,
            # and the relay refuses bravo's events.
            async with httpx.AsyncClient(base_url=mesh.url, headers=bearer(admin_token(central_dsn))) as admin:
                answer = await admin.post(f"/api/v1/partnerships/{bravo_partnership}/suspend")
                assert answer.status_code == 200 and answer.json()["status"] == "suspended"
            assert await wait_until(lambda: _bravo_status(tenant_dsn, "suspended"), 5 * INTERVAL + 5)
            async with await psycopg.AsyncConnection.connect(tenant_dsn) as conn:
                partners = await load_partners(conn)
            with pytest.raises(PartnerInactive, match="bravo is suspended"):
                verify_message(InboundMessage("ygg.events.sales.acme.bravo", b"{}"), partners, "acme")
            assert partners["charlie"].active and partners["delta"].active

            # The mesh is SIGKILLed: the sync fails, visibly, backing off; nothing local changes.
            copy_before = await _rows(tenant_dsn)
            success_before = (await _sync_state(tenant_dsn))["last_success_at"]
            mesh.kill()
            assert await wait_until(lambda: status.registry.consecutive_failures >= 4, 15), status.registry
            assert status.registry.state == "mesh_unreachable"
            assert "cannot reach the mesh" in (status.registry.last_error or "")
            # Backing off: past the interval, within the cap.
            assert INTERVAL < status.registry.retry_delay <= BACKOFF_MAX
            state = await _sync_state(tenant_dsn)
            assert state["consecutive_failures"] >= 4 and "cannot reach the mesh" in state["last_error"]
            assert state["last_success_at"] == success_before
            assert await _rows(tenant_dsn) == copy_before
            # The tenant server's /health shows how old the copy is and that the sync fails.
            async with open_api(make_settings(tenant_dsn)) as api:
                federation = (await api.http.get("/health")).json()["federation"]
            assert federation["registry_sync_failures"] >= 4
            assert federation["registry_synced_seconds_ago"] > 0

            # While it is down the registry changes; back on its port, the sync resumes.
            async with await psycopg.AsyncConnection.connect(central_dsn) as conn:
                await act_on_partnership(conn, bravo_partnership, "resume")
            mesh.start()
            assert await wait_until(lambda: _bravo_status(tenant_dsn, "active"), BACKOFF_MAX + 10)
            assert await wait_until(lambda: status.registry.state == "synced", 5)
            state = await _sync_state(tenant_dsn)
            assert state["consecutive_failures"] == 0 and state["last_success_at"] > success_before
        finally:
            stop.set()
            await asyncio.wait_for(sidecar, 20)
    assert status.registry.state == "stopped"


async def _bravo_status(dsn: str, expected: str) -> bool:
    return (await _by_tenant(dsn))["bravo"][3] == expected


async def test_a_mesh_partner_the_registry_stops_listing_is_suspended_and_local_partners_stay(tenant_dsn: str) -> None:
    def entry(tenant: str, key: str, status: str = "active") -> RegistryEntry:
        return RegistryEntry(tenant, tenant.title(), key, key_id(decode_public_key(key)), "approve", status,
                             ["sales", "purchasing", "b2b"])

    bravo_key, charlie_key, local_key = public_key(), public_key(), public_key()
    async with await psycopg.AsyncConnection.connect(tenant_dsn, autocommit=True) as conn:
        await add_partner(conn, tenant_id="delta", public_key=local_key, name="Delta Local")
        assert await apply_registry(conn, "http://mesh.test", [entry("bravo", bravo_key), entry("charlie", charlie_key)],
                                    '"v1"') == 2
        # The same answer again changes nothing (and writes no audit rows).
        audit_rows = (await (await conn.execute("SELECT count(*) FROM audit_change_log")).fetchone())[0]
        assert await apply_registry(conn, "http://mesh.test", [entry("bravo", bravo_key), entry("charlie", charlie_key)],
                                    '"v1"') == 0
        assert (await (await conn.execute("SELECT count(*) FROM audit_change_log")).fetchone())[0] == audit_rows
        # charlie disappears and bravo departs at the mesh.
        assert await apply_registry(conn, "http://mesh.test", [entry("bravo", bravo_key, "departed")], '"v2"') == 2
        actors = await (await conn.execute(
            "SELECT DISTINCT actor FROM audit_change_log WHERE table_name = 'b2b_partners' AND seq > 0 "
            "AND (new_values->>'source') = 'mesh'")).fetchall()
    assert actors == [("mesh-sync",)]
    assert {row[0]: (row[4], row[5]) for row in await _rows(tenant_dsn)} == {
        "bravo": ("departed", "mesh"), "charlie": ("suspended", "mesh"), "delta": ("active", "local")}
    assert (await _sync_state(tenant_dsn))["etag"] == '"v2"'


async def test_the_relay_refuses_a_module_the_partnership_does_not_cover(tenant_dsn: str) -> None:
    key = public_key()
    sales_only = RegistryEntry("bravo", "Bravo", key, key_id(decode_public_key(key)), "auto", "active", ["sales", "b2b"])
    async with await psycopg.AsyncConnection.connect(tenant_dsn, autocommit=True) as conn:
        await apply_registry(conn, "http://mesh.test", [sales_only], '"v1"')
        partners = await load_partners(conn)
    assert partners["bravo"].modules == ("sales", "b2b")
    with pytest.raises(PartnerModuleNotAgreed, match="does not cover purchasing"):
        verify_message(InboundMessage("ygg.events.purchasing.acme.bravo", b"{}"), partners, "acme")
    # Covered modules, and b2b (receipts) always, pass this check and fail only later, on the body.
    for module in ("sales", "b2b"):
        with pytest.raises(EnvelopeMalformed):
            verify_message(InboundMessage(f"ygg.events.{module}.acme.bravo", b"{}"), partners, "acme")

    # The partnership widens at the mesh: the next sync lets purchasing in.
    widened = RegistryEntry(*[*sales_only.__dict__.values()][:6], ["sales", "purchasing", "b2b"])
    async with await psycopg.AsyncConnection.connect(tenant_dsn, autocommit=True) as conn:
        assert await apply_registry(conn, "http://mesh.test", [widened], '"v2"') == 1
        partners = await load_partners(conn)
    with pytest.raises(EnvelopeMalformed):
        verify_message(InboundMessage("ygg.events.purchasing.acme.bravo", b"{}"), partners, "acme")
