"""The sidecar's partner registry sync: a local copy of the mesh's registry in `b2b_partners`.

When `mesh_url` is set, the sidecar asks the mesh every `registry_sync_interval_seconds` for
this tenant's partners (`GET /registry/v1/tenants/{id}/partners`), with the last ETag in
`If-None-Match` so an unchanged registry costs a 304. A changed one is written in one
transaction: each listed partner's name, key, key id, approval policy and effective status,
marked `source = 'mesh'`. Which source wins:

* a partner the mesh lists is the mesh's: its row follows the registry, whatever `ygg partner
  add` wrote before (the row becomes `mesh`);
* a `mesh` row the registry stops listing is suspended (the mesh no longer vouches for it);
* a `local` row the mesh does not list is left alone, so deployments without a mesh, and
  partners outside it, keep working as before.

The relay reads only the local table (federation/partners.py) and refuses a partner that is
not active, so a partner suspended or departed at the mesh is refused from the first batch
after the next sync. While the mesh is unreachable nothing local changes: the relay keeps
trading on the last copy, the sync retries with backoff (from the interval up to
`registry_sync_backoff_max_seconds`), and the failure is visible in the sidecar's status, its
log and the `b2b_registry_sync` row (last ETag, last success, last error, failures in a row).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from yggdrasil.broker.subjects import MODULES, InvalidSubject, validate_tenant_id
from yggdrasil.events.signing import decode_public_key, key_id
from yggdrasil.federation.backoff import Backoff
from yggdrasil.federation.partners import APPROVAL_POLICIES, STATUSES
from yggdrasil.federation.status import RegistrySyncStatus
from yggdrasil.settings import Settings

log = logging.getLogger(__name__)

# The audit trail names the sync as the actor of the partner changes it writes.
SYNC_ACTOR = "mesh-sync"


class RegistrySyncError(Exception):
    """The mesh could not be asked, or its answer cannot be used; nothing local changed."""

    def __init__(self, message: str, *, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class RegistryEntry:
    tenant_id: str
    name: str
    public_key: str
    key_id: str
    approval_policy: str
    status: str
    modules: list[str]


def parse_registry(document: Any, tenant_id: str) -> list[RegistryEntry]:
    """The entries of a registry answer, checked field by field: the registry is trusted for
    who our partners are, but a malformed answer must not become a half-written copy."""
    if not isinstance(document, dict) or document.get("tenant_id") != tenant_id:
        raise RegistrySyncError(
            f"the registry answered for another tenant or in an unknown form (expected {tenant_id})")
    partners = document.get("partners")
    if not isinstance(partners, list):
        raise RegistrySyncError("the registry answer has no partner list")
    entries = []
    for raw in partners:
        try:
            entry = RegistryEntry(
                tenant_id=validate_tenant_id(raw["tenant_id"]), name=str(raw["name"])[:200],
                public_key=raw["public_key"], key_id=raw["key_id"],
                approval_policy=raw["approval_policy"], status=raw["status"],
                modules=[str(module) for module in raw.get("modules", MODULES)],
            )
            computed = key_id(decode_public_key(entry.public_key))
        except (KeyError, TypeError, ValueError, AttributeError, InvalidSubject) as error:
            raise RegistrySyncError(f"a registry entry is malformed: {error!r}") from None
        if computed != entry.key_id:
            raise RegistrySyncError(f"the registry's key id for {entry.tenant_id} does not match its public key")
        if not entry.modules or not set(entry.modules) <= set(MODULES):
            raise RegistrySyncError(f"the registry entry for {entry.tenant_id} names unknown modules {entry.modules}")
        if entry.approval_policy not in APPROVAL_POLICIES or entry.status not in STATUSES:
            raise RegistrySyncError(f"the registry entry for {entry.tenant_id} has an unknown policy or status")
        if entry.tenant_id == tenant_id:
            raise RegistrySyncError("the registry lists this tenant as its own partner")
        entries.append(entry)
    return entries


# -- SQL ------------------------------------------------------------------------------------------

_UPSERT_PARTNER = """
    INSERT INTO b2b_partners AS p (tenant_id, name, public_key, key_id, approval_policy, status, modules, source)
    VALUES (%(tenant_id)s, %(name)s, %(public_key)s, %(key_id)s, %(approval_policy)s, %(status)s,
            %(modules)s::text[], 'mesh')
    ON CONFLICT (tenant_id) DO UPDATE
       SET name = EXCLUDED.name, public_key = EXCLUDED.public_key, key_id = EXCLUDED.key_id,
           approval_policy = EXCLUDED.approval_policy, status = EXCLUDED.status, modules = EXCLUDED.modules,
           source = 'mesh', updated_at = now()
     -- An unchanged row is not rewritten: no audit row, no churn, on every sync.
     WHERE (p.name, p.public_key, p.key_id, p.approval_policy, p.status, p.modules, p.source)
           IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.public_key, EXCLUDED.key_id, EXCLUDED.approval_policy,
                             EXCLUDED.status, EXCLUDED.modules, 'mesh')
"""

_SUSPEND_UNLISTED = """
    UPDATE b2b_partners SET status = 'suspended', updated_at = now()
     WHERE source = 'mesh' AND status = 'active' AND tenant_id <> ALL(%(listed)s)
"""

_SAVE_STATE = """
    INSERT INTO b2b_registry_sync AS s (singleton, mesh_url, etag, partners, last_attempt_at, last_success_at,
                                        consecutive_failures)
    VALUES (true, %(mesh_url)s, %(etag)s, %(partners)s, now(), now(), 0)
    ON CONFLICT (singleton) DO UPDATE
       SET mesh_url = EXCLUDED.mesh_url, etag = EXCLUDED.etag,
           partners = coalesce(EXCLUDED.partners, s.partners), last_attempt_at = now(), last_success_at = now(),
           consecutive_failures = 0
"""

_SAVE_FAILURE = """
    INSERT INTO b2b_registry_sync AS s (singleton, mesh_url, last_attempt_at, last_error, last_error_at,
                                        consecutive_failures)
    VALUES (true, %(mesh_url)s, now(), %(error)s, now(), 1)
    ON CONFLICT (singleton) DO UPDATE
       SET last_attempt_at = now(), last_error = EXCLUDED.last_error, last_error_at = now(),
           consecutive_failures = s.consecutive_failures + 1
"""


async def load_sync_state(conn: psycopg.AsyncConnection) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM b2b_registry_sync")
        return await cur.fetchone()


async def apply_registry(conn: psycopg.AsyncConnection, mesh_url: str, entries: list[RegistryEntry],
                         etag: str | None) -> int:
    """Write the registry's entries, suspend the mesh rows it no longer lists, and remember the
    ETag: one transaction, so the copy is never half of one answer. Returns the rows changed."""
    changed = 0
    async with conn.transaction():
        await conn.execute("SELECT set_config('ygg.actor', %s, true)", (SYNC_ACTOR,))
        for entry in entries:
            cur = await conn.execute(_UPSERT_PARTNER, entry.__dict__)
            changed += cur.rowcount
        cur = await conn.execute(_SUSPEND_UNLISTED, {"listed": [e.tenant_id for e in entries]})
        changed += cur.rowcount
        await conn.execute(_SAVE_STATE, {"mesh_url": mesh_url, "etag": etag, "partners": len(entries)})
    return changed


async def record_not_modified(conn: psycopg.AsyncConnection, mesh_url: str, etag: str) -> None:
    await conn.execute(_SAVE_STATE, {"mesh_url": mesh_url, "etag": etag, "partners": None})


async def record_failure(conn: psycopg.AsyncConnection, mesh_url: str, error: str) -> None:
    await conn.execute(_SAVE_FAILURE, {"mesh_url": mesh_url, "error": error[:2000]})


# -- the loop -------------------------------------------------------------------------------------

class RegistrySync:
    def __init__(self, pool: AsyncConnectionPool, *, tenant_id: str, mesh_url: str, interval: float,
                 timeout: float, backoff_max: float, status: RegistrySyncStatus | None = None):
        self.pool = pool
        self.tenant_id = tenant_id
        self.mesh_url = mesh_url.rstrip("/")
        self.interval = interval
        self.timeout = timeout
        self.backoff = Backoff(interval, max(interval, backoff_max))
        self.status = status or RegistrySyncStatus()

    @classmethod
    def from_settings(cls, settings: Settings, pool: AsyncConnectionPool,
                      status: RegistrySyncStatus | None = None) -> RegistrySync:
        assert settings.mesh_url, "the registry sync needs mesh_url"
        return cls(pool, tenant_id=settings.tenant_id, mesh_url=settings.mesh_url,
                   interval=settings.registry_sync_interval_seconds, timeout=settings.registry_sync_timeout_seconds,
                   backoff_max=settings.registry_sync_backoff_max_seconds, status=status)

    @property
    def registry_url(self) -> str:
        return f"{self.mesh_url}/registry/v1/tenants/{self.tenant_id}/partners"

    async def sync_once(self, http: httpx.AsyncClient) -> bool:
        """Ask the mesh once and bring the local copy up to date. Returns whether the registry
        had changed (False: 304). Raises RegistrySyncError (nothing local changed), or
        psycopg / pool errors when the tenant database is unavailable."""
        async with self.pool.connection() as conn:
            state = await load_sync_state(conn)
        etag = state["etag"] if state and state["mesh_url"] == self.mesh_url else None
        try:
            answer = await http.get(self.registry_url, headers={"If-None-Match": etag} if etag else {},
                                    timeout=self.timeout)
        except httpx.HTTPError as error:
            reason = f"{type(error).__name__}: {error}".rstrip(": ")
            raise RegistrySyncError(f"cannot reach the mesh at {self.mesh_url}: {reason}", unreachable=True) from None
        if answer.status_code == 304 and etag:
            async with self.pool.connection() as conn:
                await record_not_modified(conn, self.mesh_url, etag)
            self.status.etag = etag
            self.status.not_modified_total += 1
            return False
        if answer.status_code != 200:
            raise RegistrySyncError(f"the mesh answered HTTP {answer.status_code}: {_error_message(answer)}")
        try:
            document = answer.json()
        except ValueError:
            raise RegistrySyncError("the mesh's registry answer is not JSON") from None
        entries = parse_registry(document, self.tenant_id)
        new_etag = answer.headers.get("etag")
        async with self.pool.connection() as conn:
            changed = await apply_registry(conn, self.mesh_url, entries, new_etag)
        self.status.etag, self.status.partners = new_etag, len(entries)
        self.status.changed_total += 1
        log.info("partner registry synced from the mesh",
                 extra={"partners": len(entries), "rows_changed": changed, "etag": new_etag})
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Sync every interval until `stop`; back off while failing. Never raises."""
        status = self.status
        log.info("registry sync started", extra={"mesh_url": self.mesh_url, "interval_s": self.interval})
        # httpx logs each request at INFO: a line per poll; our state changes say what matters.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
            while not stop.is_set():
                try:
                    await self.sync_once(http)
                except RegistrySyncError as error:
                    await self._failed("mesh_unreachable" if error.unreachable else "mesh_error", str(error))
                except (psycopg.Error, PoolTimeout) as error:
                    await self._failed("database_unavailable", f"{type(error).__name__}: {error}".strip())
                except Exception as error:  # the loop must outlive any one surprise
                    log.exception("registry sync failed unexpectedly")
                    await self._failed("mesh_error", f"{type(error).__name__}: {error}")
                else:
                    self.backoff.reset()
                    status.consecutive_failures = 0
                    status.last_success_at = datetime.now(UTC)
                    status.retry_delay = self.interval
                    status.move("synced")
                assert status.retry_delay is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), status.retry_delay)
        status.move("stopped")

    async def _failed(self, state: str, error: str) -> None:
        status = self.status
        status.consecutive_failures += 1
        status.retry_delay = self.backoff.next_delay()
        status.move(state, error)
        log.debug("registry sync failed", extra={"error": error, "failures": status.consecutive_failures,
                                                 "retry_in_s": round(status.retry_delay, 2)})
        if state == "database_unavailable":
            return
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await record_failure(conn, self.mesh_url, error)
        except (psycopg.Error, PoolTimeout):
            pass  # the database is down as well: the status and the log still say it


def _error_message(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:200] or answer.reason_phrase
