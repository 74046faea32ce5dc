"""One typed settings object, built at the entrypoint and passed down.

Sources, highest first: constructor arguments, environment variables `YGG_*`, the TOML file
named by `YGG_CONFIG` (default `ygg.toml` in the working directory, if present).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YGG_", extra="ignore")

    # -- tenant server ---------------------------------------------------------------------
    tenant_id: str = Field("acme", pattern=r"^[a-z][a-z0-9-]{1,62}$", description="this tenant's id")
    tenant_name: str = "ACME Seller"
    tenant_dsn: str = Field(
        "postgresql://postgres@127.0.0.1:5432/ygg_tenant", description="the tenant's PostgreSQL"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    pool_min_size: int = Field(2, ge=1)
    pool_max_size: int = Field(16, ge=1)
    # How long a request waits for a database connection before it answers 503.
    db_timeout_seconds: float = Field(0.8, gt=0)
    # How often the background probe checks an unreachable database.
    db_probe_interval_seconds: float = Field(1.0, gt=0)
    cache_max_bytes: int = Field(512 * 1024 * 1024, ge=0)
    cache_ttl_seconds: float = Field(30.0, ge=0)
    # Expired entries are still served (marked stale) while the database is down, up to this age.
    cache_max_stale_seconds: float = Field(3600.0, ge=0)
    rate_limit_per_second: float = Field(200.0, gt=0)
    rate_limit_burst: int = Field(400, ge=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    log_level: str = "INFO"
    log_json: bool = True

    # -- federation sidecar (`ygg sidecar run`) --------------------------------------------
    broker_url: str = Field("nats://127.0.0.1:4222", description="NATS JetStream server(s), comma-separated")
    broker_user: str | None = Field(None, description="this tenant's broker user (its tenant id)")
    broker_password: str | None = None
    # Streams are the broker operator's (admin) business; a tenant's credentials cannot create
    # them. The dev stack and tests, which run the broker themselves, turn this on.
    broker_ensure_streams: bool = False
    signing_key_path: Path | None = Field(None, description="file holding this tenant's Ed25519 private key")
    # Outbox rows claimed and published per round, and events applied per relay transaction.
    # 250 drained a backlog about 25% faster than 100 on a 2-core machine (bench/RESULTS.md,
    # 2026-12-04 session 4), 500 no faster; a larger batch holds the buyer's transaction (and
    # the audit chain its own writes wait for) longer: about 100 ms at 250 against 55 at 100.
    outbox_batch_size: int = Field(250, ge=1, le=10_000)
    # How often the publisher looks for pending events when no NOTIFY woke it.
    outbox_poll_seconds: float = Field(5.0, gt=0)
    publisher_backoff_initial_seconds: float = Field(0.5, gt=0)
    publisher_backoff_max_seconds: float = Field(30.0, gt=0)
    broker_reconnect_initial_seconds: float = Field(1.0, gt=0)
    broker_reconnect_max_seconds: float = Field(30.0, gt=0)
    relay_batch_size: int = Field(250, ge=1, le=10_000)
    relay_fetch_timeout_seconds: float = Field(1.0, gt=0)
    max_event_bytes: int = Field(256 * 1024, ge=1024)
    # The outbox is the system of record for what was sent, so it is kept forever by default;
    # with a number, answered events (acknowledged or rejected) older than that are deleted.
    # Pending and published events are never deleted.
    outbox_retention_days: float | None = Field(None, gt=0)
    # How long an inbound event may wait for a missing predecessor before the source is asked
    # to replay the gap from its outbox (and again after as long, while it stays open).
    resync_after_seconds: float = Field(30.0, gt=0)
    # How long a published order event may go without the destination's receipt before it is
    # sent again (an event lost by the broker or expired past its retention with nothing later
    # held behind it). Each re-send of an event doubles its wait, up to the cap.
    receipt_timeout_seconds: float = Field(60.0, gt=0)
    receipt_resend_max_interval_seconds: float = Field(600.0, gt=0)

    # -- broker operator (`ygg broker check|ensure`; the dev stack) -------------------------
    # The unrestricted broker user that declares streams and consumers (tenants cannot).
    # Without a password, `ygg broker` connects without credentials (a broker with no auth).
    broker_admin_user: str = "ygg_admin"
    broker_admin_password: str | None = None
    # The stream declaration (broker/streams.py) as this deployment configures it; `ygg broker
    # check` compares the running broker with these.
    broker_stream_max_age_seconds: float = Field(7 * 24 * 3600.0, ge=0, description="0 keeps events forever")
    broker_duplicate_window_seconds: float = Field(24 * 3600.0, gt=0)
    broker_stream_replicas: int = Field(1, ge=1, le=5)

    # -- coordination plane: the `ygg_central` database of the mesh server and the portal -----
    central_dsn: str = Field(
        "postgresql://postgres@127.0.0.1:5432/ygg_central", description="the coordination plane's PostgreSQL"
    )

    # -- mesh server (`ygg mesh serve`) ------------------------------------------------------
    mesh_url: str | None = Field(None, description="the mesh server a sidecar syncs its partner registry from")
    mesh_host: str = "127.0.0.1"
    mesh_port: int = Field(8100, ge=0, le=65535)
    mesh_pool_max_size: int = Field(10, ge=1)
    # Off on extra copies of the mesh server, so that only one of them polls the tenants.
    mesh_health_enabled: bool = True
    mesh_health_interval_seconds: float = Field(10.0, gt=0, description="how often each active tenant's /health is polled")
    mesh_health_timeout_seconds: float = Field(5.0, gt=0, description="a /health poll with no answer by then counts as down")
    # An answer slower than this counts as degraded even when the tenant says ok.
    mesh_health_slow_ms: float = Field(2000.0, gt=0)
    mesh_health_history_days: float = Field(7.0, gt=0, description="health checks older than this are pruned")
    # How long the API proxy waits for the tenant (to connect, and between bytes of the answer).
    mesh_proxy_timeout_seconds: float = Field(30.0, gt=0)
    # The sidecar's registry sync (active when mesh_url is set).
    registry_sync_interval_seconds: float = Field(30.0, gt=0)
    registry_sync_timeout_seconds: float = Field(10.0, gt=0)
    # While the mesh is unreachable, retries back off from the interval up to this.
    registry_sync_backoff_max_seconds: float = Field(300.0, gt=0)

    # -- customer portal (`ygg portal serve`) ------------------------------------------------
    portal_host: str = "127.0.0.1"
    portal_port: int = Field(8300, ge=0, le=65535)
    portal_pool_max_size: int = Field(10, ge=1)
    # The session cookie's Secure flag: on wherever the portal is served over HTTPS (behind the
    # reverse proxy); off only for plain-http development on 127.0.0.1.
    portal_cookie_secure: bool = False
    portal_session_max_age_seconds: float = Field(7 * 24 * 3600.0, gt=0)
    portal_session_idle_seconds: float = Field(12 * 3600.0, gt=0)
    # Failed sign-ins: this many within the window lock the email (or client address) for the
    # lockout period. Per address the bar is higher: many people may share one NAT address.
    portal_login_max_failures: int = Field(5, ge=1)
    portal_login_max_failures_per_address: int = Field(50, ge=1)
    portal_login_failure_window_seconds: float = Field(900.0, gt=0)
    portal_login_lockout_seconds: float = Field(900.0, gt=0)
    # argon2id cost; stored hashes made with other parameters are re-hashed at the next sign-in.
    portal_argon2_time_cost: int = Field(3, ge=1)
    portal_argon2_memory_kib: int = Field(64 * 1024, ge=64)
    portal_argon2_parallelism: int = Field(4, ge=1)

    # -- backups (`ygg backup`, `ygg restore`) -------------------------------------------------
    backup_dir: Path = Field(Path("backups"), description="where backup runs are kept, one folder per run")
    # What `ygg backup run` and the scheduler dump, by name: {"central": DSN, "tenant-acme": DSN}.
    # Empty: the central database (central_dsn) and this tenant's database (tenant_dsn).
    backup_databases: dict[str, str] = Field(default_factory=dict)
    backup_retention_days: float = Field(14.0, gt=0)
    backup_time_utc: str = Field("03:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$",
                                 description="the scheduler's daily run, HH:MM[:SS] in UTC")
    # A failed scheduled run is retried this many times, waiting initial, 2x, 4x ... (capped at
    # an hour) in between; after that the scheduler waits for the next daily slot.
    backup_retry_attempts: int = Field(3, ge=0)
    backup_retry_initial_seconds: float = Field(60.0, gt=0)
    # Folder holding pg_dump / pg_restore; unset: the pgserver package's binaries, then PATH.
    pg_bin_dir: Path | None = None

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("YGG_CONFIG", "ygg.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)
