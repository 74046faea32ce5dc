"""A tenant's arrival (`ygg tenant create`) and departure (`ygg tenant depart`).

Onboarding makes, in this order: the tenant database (created if absent, refused if it holds
anything) and its migrations, the first admin token, the Ed25519 signing key, the broker
password, the registry entry in ygg_central, the broker user in the broker's users file, and
finally tells the broker to reload. Everything is checked before anything is made (a tenant
that exists in any of these places is refused, exit 1, nothing written); a step that fails
undoes the steps before it, newest first. Only the broker's reload comes after the point of no
return: if it fails, everything else stays and the error says how to reload by hand.

The registry is written with plain SQL against ygg_central's `tenants` table (migration 0001):
the mesh server's registry adapter is being written beside this and will take that over.

Departure: a full export (ops/export.py); then, in one transaction of the tenant database, one
signed `b2b.partner.departed` event per partner into the outbox; then a wait for the partners'
receipts (the tenant's sidecar must still be running: it publishes the events and receives the
receipts); then status `departed` in the registry, which partners' registry syncs pick up too.
See docs/ops/tenant-lifecycle.md for the operator's order of steps.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from yggdrasil import db
from yggdrasil.broker.permissions import ACCOUNT, ADMIN_USER, inbox_prefix, render_auth_config, tenant_permissions
from yggdrasil.broker.subjects import InvalidSubject, validate_tenant_id
from yggdrasil.files import replace_file
from yggdrasil.ops.export import ExportError, ExportResult, export_tenant_database

TENANT_MIGRATIONS = "yggdrasil.tenant"
DEPARTURE_EVENT = "b2b.partner.departed"
DEPARTURE_AGGREGATE = "tenant"
# The same rule as ygg_central's tenants.api_url.
_API_URL = re.compile(r"^https?://[^\s]+$")

Say = Callable[[str], None]


class LifecycleError(Exception):
    """Onboarding or departure cannot go on; the message is one readable line (or a few, when
    it has to say what was done and what to do). `exit_code` for the CLI."""

    exit_code = 2


class TenantAlreadyExists(LifecycleError):
    exit_code = 1


class TenantAlreadyDeparted(LifecycleError):
    exit_code = 1


class DepartureRefused(LifecycleError):
    exit_code = 1


class StepFailed(LifecycleError):
    """A step after the checks failed: the message says what was undone or is left, and what to do."""

    exit_code = 1


def tenant_database_name(tenant_id: str) -> str:
    return "ygg_tenant_" + tenant_id.replace("-", "_")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _write_secret_file(path: Path, text: str) -> None:
    """Create `path` (mode 0600) with `text`; never replaces an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


# -- the broker's users file ------------------------------------------------------------------------
#
# nats-server cannot add a user to a list defined in another file, so the users file holds the
# whole `accounts` block (what broker/permissions.py renders: the admin user and one user per
# tenant) and the broker's main config includes it: `include "users.conf"`, a path relative to
# the main config's folder (nats-server joins it to that folder, even when it is absolute).
# The block is JSON, which nats-server's config syntax accepts, so it can be read back here.


def broker_user_entry(tenant_id: str, password: str) -> dict[str, Any]:
    return {"user": tenant_id, "password": password, "permissions": tenant_permissions(tenant_id)}


def include_directive(users_file: Path, main_config: Path) -> str:
    """The line that makes the broker's main config read `users_file`."""
    relative = os.path.relpath(Path(users_file).absolute(), Path(main_config).absolute().parent)
    return f"include {json.dumps(relative)}"


def read_broker_users(path: Path) -> dict[str, Any]:
    """The parsed `accounts` block of a users file ygg wrote. Raises LifecycleError otherwise."""
    text = path.read_text(encoding="utf-8")
    prefix = "accounts:"
    try:
        if not text.lstrip().startswith(prefix):
            raise ValueError("it does not start with `accounts:`")
        accounts = json.loads(text.lstrip()[len(prefix):])
        users = accounts[ACCOUNT]["users"]
        if not isinstance(users, list) or not all(isinstance(u, dict) and "user" in u for u in users):
            raise ValueError(f"accounts.{ACCOUNT}.users is not a list of users")
    except (ValueError, KeyError, TypeError) as error:
        raise LifecycleError(f"{path} is not a broker users file as ygg writes it ({_first_line(error)}); "
                             "run without --broker-users-file to get the block to add by hand") from None
    return accounts


def render_broker_users(accounts: dict[str, Any]) -> str:
    return "accounts: " + json.dumps(accounts, indent=2) + "\n"


def broker_users(accounts: dict[str, Any]) -> list[str]:
    return [user["user"] for user in accounts[ACCOUNT]["users"]]


def _proc_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def check_broker_pid(pid: int) -> None:
    """Refuse to signal anything but a running nats-server."""
    cmdline = _proc_cmdline(pid)
    if not cmdline or not cmdline[0]:
        raise LifecycleError(f"no process {pid} is running (--broker-pid)")
    if "nats-server" not in Path(cmdline[0]).name:
        raise LifecycleError(f"process {pid} is {Path(cmdline[0]).name}, not nats-server (--broker-pid)")


def reload_broker(pid: int) -> None:
    """SIGHUP: nats-server rereads its config, includes too (as `nats-server --signal reload=PID`)."""
    check_broker_pid(pid)
    os.kill(pid, signal.SIGHUP)


async def _broker_accepts(url: str, user: str, password: str, timeout: float) -> str | None:
    """None once `user` can connect to the broker at `url`, else the last error."""
    import nats

    async def quiet(_error: Exception) -> None:
        pass

    deadline = time.monotonic() + timeout
    error: str | None = "not tried"
    while time.monotonic() < deadline:
        try:
            nc = await nats.connect(url, user=user, password=password, inbox_prefix=inbox_prefix(user),
                                    allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2,
                                    error_cb=quiet)
        except Exception as exc:  # authorization refused (not reloaded yet), or unreachable
            error = _first_line(exc)
            await asyncio.sleep(0.2)
            continue
        await nc.close()
        return None
    return error


# -- the registry in ygg_central --------------------------------------------------------------------

_REGISTERED = "SELECT status, status_changed_at, public_key, created_at FROM tenants WHERE id = %s"

_REGISTER = """
    INSERT INTO tenants (id, name, api_url, public_key, key_id, broker_credentials_ref)
    VALUES (%(id)s, %(name)s, %(api_url)s, %(public_key)s, %(key_id)s, %(credentials_ref)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING created_at
"""

# Only ever to undo our own INSERT of a moment ago, before anything could refer to the row.
_UNREGISTER = "DELETE FROM tenants WHERE id = %s AND status = 'active'"

_MARK_DEPARTED = """
    UPDATE tenants SET status = 'departed', status_changed_at = now(), updated_at = now()
     WHERE id = %s AND status <> 'departed'
    RETURNING status_changed_at
"""


def _central(dsn: str) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, connect_timeout=5, autocommit=True, application_name="ygg-tenant-lifecycle")
    except psycopg.Error as error:
        raise LifecycleError(f"cannot reach ygg_central: {_first_line(error)}") from None


def registry_entry(central_dsn: str, tenant_id: str) -> tuple[str, datetime, str, datetime] | None:
    """(status, status_changed_at, public_key, created_at) of the tenant, or None."""
    with _central(central_dsn) as conn:
        return conn.execute(_REGISTERED, (tenant_id,)).fetchone()


# -- onboarding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnboardingPlan:
    tenant_id: str
    name: str
    api_url: str
    admin_dsn: str                     # a database on the server that will hold the tenant's
    central_dsn: str
    keys_dir: Path
    broker_url: str                    # for the settings snippet
    broker_users_file: Path | None = None
    broker_pid: int | None = None
    # Connect as the new user after the reload, to prove the broker took it.
    verify_broker_url: str | None = None
    broker_admin_password: str | None = None   # for a users file created from scratch
    mesh_url: str | None = None

    @property
    def database(self) -> str:
        return tenant_database_name(self.tenant_id)

    @property
    def tenant_dsn(self) -> str:
        return db.dsn_with_database(self.admin_dsn, self.database)

    @property
    def key_path(self) -> Path:
        return self.keys_dir.absolute() / f"{self.tenant_id}.key"

    @property
    def password_path(self) -> Path:
        return self.keys_dir.absolute() / f"{self.tenant_id}.broker-password"


@dataclass
class Onboarded:
    tenant_id: str
    tenant_dsn: str
    key_path: Path
    public_key: str
    key_id: str
    password_path: Path
    admin_token: str
    made: list[str] = field(default_factory=list)        # one line per thing made
    instructions: list[str] = field(default_factory=list)
    settings_toml: str = ""


def _validate(plan: OnboardingPlan) -> None:
    try:
        validate_tenant_id(plan.tenant_id)
    except InvalidSubject as error:
        raise LifecycleError(str(error)) from None
    if not 1 <= len(plan.name) <= 200:
        raise LifecycleError("--name must be 1 to 200 characters")
    if not _API_URL.fullmatch(plan.api_url):
        raise LifecycleError(f"--api-url must be an http(s) URL, not {plan.api_url!r}")


_USER_OBJECTS = r"""
    SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
"""


def _database_state(admin_dsn: str, name: str) -> int | None:
    """None if the database does not exist, else how many relations it holds."""
    try:
        if not db.database_exists(admin_dsn, name):
            return None
        with psycopg.connect(db.dsn_with_database(admin_dsn, name), connect_timeout=5, autocommit=True) as conn:
            return conn.execute(_USER_OBJECTS).fetchone()[0]
    except psycopg.Error as error:
        raise LifecycleError(f"cannot reach the tenant database server: {_first_line(error)}") from None


def _check_can_onboard(plan: OnboardingPlan) -> tuple[bool, dict[str, Any] | None]:
    """Everything that would make onboarding fail or clash, before anything is written.
    Returns whether the database must be created, and the users file's parsed content
    (None when it is to be created, or not used)."""
    _validate(plan)
    entry = registry_entry(plan.central_dsn, plan.tenant_id)
    if entry is not None:
        status, _changed, _key, created_at = entry
        since = f"{created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        raise TenantAlreadyExists(f"tenant {plan.tenant_id} already exists: registered in ygg_central since "
                                  f"{since} (status {status}); nothing was changed")
    relations = _database_state(plan.admin_dsn, plan.database)
    if relations:
        raise TenantAlreadyExists(f"database {plan.database} exists and is not empty ({relations} relations); "
                                  "nothing was changed")
    for path, what in ((plan.key_path, "signing key"), (plan.password_path, "broker password")):
        if path.exists():
            raise TenantAlreadyExists(f"{what} file {path} exists; refusing to replace it; nothing was changed")
    accounts = None
    if plan.broker_users_file is not None and plan.broker_users_file.exists():
        accounts = read_broker_users(plan.broker_users_file)
        if plan.tenant_id in broker_users(accounts):
            raise TenantAlreadyExists(f"the broker users file {plan.broker_users_file} already has a user "
                                      f"{plan.tenant_id}; nothing was changed")
    if plan.broker_pid is not None:
        if plan.broker_users_file is None:
            raise LifecycleError("--broker-pid needs --broker-users-file (the file the broker is to reread)")
        check_broker_pid(plan.broker_pid)
    return relations is None, accounts


class _Steps:
    """What has been made so far, and how to undo it."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def did(self, line: str, undo_what: str | None = None, undo: Callable[[], None] | None = None) -> None:
        self.made.append(line)
        if undo is not None:
            self._undo.append((undo_what or line, undo))

    def roll_back(self) -> tuple[list[str], list[str]]:
        undone, left = [], []
        for what, undo in reversed(self._undo):
            try:
                undo()
                undone.append(what)
            except Exception as error:  # keep undoing the rest; report what could not be
                left.append(f"{what} ({_first_line(error)})")
        return undone, left


def onboard_tenant(plan: OnboardingPlan) -> Onboarded:
    """Onboard one tenant end to end (see the module docstring). Raises TenantAlreadyExists
    (nothing written), LifecycleError (bad input, unreachable server: nothing written) or
    StepFailed (a step failed: the message says what was undone, what is left, what to do)."""
    create_database, accounts = _check_can_onboard(plan)
    from yggdrasil.events.signing import encode_public_key, generate_keypair, key_id
    from yggdrasil.federation.keys import write_signing_key
    from yggdrasil.tenant.auth import create_token

    steps = _Steps()
    step = "creating the tenant database"
    try:
        if create_database:
            db.create_database(plan.admin_dsn, plan.database)
            steps.did(f"database      {plan.database} (created)", f"database {plan.database} dropped",
                      lambda: db.drop_database(plan.admin_dsn, plan.database))
        else:
            steps.did(f"database      {plan.database} (existed, empty)", f"database {plan.database}",
                      _not_ours_to_drop(plan.database))
        step = "migrating the tenant database"
        applied = db.apply_migrations(plan.tenant_dsn, TENANT_MIGRATIONS)
        steps.did(f"migrations    {len(applied)} applied to {plan.database}")

        step = "creating the first admin token"
        with psycopg.connect(plan.tenant_dsn) as conn:
            token = create_token(conn, "admin", "admin", "first admin token (ygg tenant create)",
                                 tenant_id=plan.tenant_id)
        steps.did("admin user    admin, with a first token (printed below, shown once)")

        step = "writing the signing key"
        private_key, public_key = generate_keypair()
        write_signing_key(plan.key_path, private_key)
        public_text, key_identifier = encode_public_key(public_key), key_id(public_key)
        steps.did(f"signing key   {plan.key_path} (key id {key_identifier}, public key {public_text})",
                  f"{plan.key_path} removed", plan.key_path.unlink)

        step = "writing the broker password"
        password = secrets.token_urlsafe(24)
        _write_secret_file(plan.password_path, password + "\n")
        steps.did(f"broker pass   {plan.password_path} (mode 0600)", f"{plan.password_path} removed",
                  plan.password_path.unlink)

        step = "registering the tenant in ygg_central"
        with _central(plan.central_dsn) as conn:
            row = conn.execute(_REGISTER, {
                "id": plan.tenant_id, "name": plan.name, "api_url": plan.api_url, "public_key": public_text,
                "key_id": key_identifier, "credentials_ref": str(plan.password_path)}).fetchone()
        if row is None:  # registered by someone else since the check
            raise TenantAlreadyExists(f"tenant {plan.tenant_id} was registered in ygg_central meanwhile")
        steps.did(f"registry      {plan.tenant_id} in ygg_central tenants (status active)",
                  f"registry entry {plan.tenant_id} deleted", lambda: _unregister(plan))

        step = "adding the broker user"
        entry = broker_user_entry(plan.tenant_id, password)
        instructions = _add_broker_user(plan, entry, accounts, steps)
    except TenantAlreadyExists as error:
        undone, left = steps.roll_back()
        raise StepFailed(f"{error}; undone: {', '.join(undone) or 'nothing'}"
                         + (f"; left behind: {'; '.join(left)}" if left else "")) from None
    except Exception as error:
        undone, left = steps.roll_back()
        message = f"onboarding {plan.tenant_id} failed while {step}: {_first_line(error)}"
        message += f"\n  undone: {', '.join(undone) or 'nothing'}"
        if left:
            message += f"\n  left behind (remove by hand before trying again): {'; '.join(left)}"
        raise StepFailed(message) from None

    result = Onboarded(plan.tenant_id, plan.tenant_dsn, plan.key_path, public_text, key_identifier,
                       plan.password_path, token, steps.made, instructions)
    result.settings_toml = settings_toml(plan)
    if plan.broker_pid is not None:
        _reload_and_verify(plan, password, result)
    return result


def _not_ours_to_drop(database: str) -> Callable[[], None]:
    def undo() -> None:
        raise RuntimeError(f"it existed before, so it is not dropped; empty {database} or drop it")
    return undo


def _unregister(plan: OnboardingPlan) -> None:
    with _central(plan.central_dsn) as conn:
        conn.execute(_UNREGISTER, (plan.tenant_id,))


def _add_broker_user(plan: OnboardingPlan, entry: dict[str, Any], accounts: dict[str, Any] | None,
                     steps: _Steps) -> list[str]:
    """Write the user into the users file (creating it if needed), or, without a users file,
    return the block for the operator to add."""
    users_file = plan.broker_users_file
    if users_file is None:
        return [
            "broker: add this user to the users list of the YGG account in your nats-server config, "
            "then reload it (nats-server --signal reload=<pid>, or SIGHUP); the block holds the password:",
            json.dumps(entry, indent=2),
        ]
    users_file = users_file.absolute()
    if accounts is None:
        admin_password = plan.broker_admin_password
        if admin_password is None:
            admin_password = secrets.token_urlsafe(24)
            admin_file = users_file.with_name(f"{ADMIN_USER}.broker-password")
            _write_secret_file(admin_file, admin_password + "\n")
            steps.did(f"broker admin  {admin_file} (password of {ADMIN_USER}, mode 0600)",
                      f"{admin_file} removed", admin_file.unlink)
        text = render_auth_config({}, admin_password=admin_password)
        accounts = json.loads(text[len("accounts:"):])
        previous = None
    else:
        previous = users_file.read_text(encoding="utf-8")
    accounts[ACCOUNT]["users"].append(entry)
    users_file.parent.mkdir(parents=True, exist_ok=True)
    replace_file(users_file, render_broker_users(accounts))
    steps.did(f"broker user   {plan.tenant_id} in {users_file}", f"{users_file} restored",
              (lambda: users_file.unlink()) if previous is None else (lambda: replace_file(users_file, previous)))
    if plan.broker_pid is None:
        return [f"broker: reload it to take the new user: nats-server --signal reload=<pid> (or SIGHUP); "
                f"its main config must include {users_file} (include \"<that path, relative to the main "
                "config's folder>\")"]
    return []


def _reload_and_verify(plan: OnboardingPlan, password: str, result: Onboarded) -> None:
    assert plan.broker_pid is not None
    try:
        reload_broker(plan.broker_pid)
    except (LifecycleError, OSError) as error:
        raise StepFailed(_after_point_of_no_return(result, f"the broker was not reloaded: {_first_line(error)}",
                                                   plan)) from None
    line = f"broker        nats-server pid {plan.broker_pid} reloaded"
    if plan.verify_broker_url:
        refused = asyncio.run(_broker_accepts(plan.verify_broker_url, plan.tenant_id, password, timeout=10.0))
        if refused is not None:
            raise StepFailed(_after_point_of_no_return(
                result, f"the broker at {plan.verify_broker_url} still refuses {plan.tenant_id}: {refused}", plan))
        line += f"; {plan.verify_broker_url} accepts {plan.tenant_id}"
    result.made.append(line)


def _after_point_of_no_return(result: Onboarded, problem: str, plan: OnboardingPlan) -> str:
    made = "\n".join(f"  {line}" for line in result.made)
    return (f"tenant {plan.tenant_id} is onboarded except for one step: {problem}\n{made}\n"
            f"  admin token   {result.admin_token}\n"
            f"what to do: reload the broker by hand (nats-server --signal reload=<pid>, or SIGHUP) and check "
            f"that its config includes {plan.broker_users_file}; do not run `ygg tenant create` again")


def settings_toml(plan: OnboardingPlan) -> str:
    """The settings the tenant's server (`ygg tenant serve`) and sidecar (`ygg sidecar run`)
    read from ygg.toml. The broker password stays in its file: give it as YGG_BROKER_PASSWORD."""
    def value(text: str) -> str:
        return json.dumps(text)  # a JSON string is a valid TOML basic string

    lines = [
        f"# ygg.toml of tenant {plan.tenant_id}, for `ygg tenant serve` and `ygg sidecar run`",
        f"tenant_id = {value(plan.tenant_id)}",
        f"tenant_name = {value(plan.name)}",
        f"tenant_dsn = {value(plan.tenant_dsn)}",
        f"signing_key_path = {value(str(plan.key_path))}",
        f"broker_url = {value(plan.broker_url)}",
        f"broker_user = {value(plan.tenant_id)}",
        f"# broker_password: export YGG_BROKER_PASSWORD=\"$(cat {plan.password_path})\"",
    ]
    if plan.mesh_url:
        lines.append(f"mesh_url = {value(plan.mesh_url)}")
    return "\n".join(lines) + "\n"


# -- departure --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeparturePlan:
    tenant_id: str
    tenant_dsn: str
    central_dsn: str
    export_dir: Path
    signing_key_path: Path | None
    # How long to wait for the partners' receipts before marking the registry (0: do not wait).
    wait_seconds: float = 60.0
    # Depart although order events to partners are still unanswered.
    force: bool = False
    note: str = ""


@dataclass(frozen=True)
class PartnerNotice:
    partner: str
    event_id: UUID
    status: str                 # of the outbox row: pending, published, acknowledged, rejected
    receipt_outcome: str | None

    def describe(self) -> str:
        if self.status == "acknowledged":
            return f"{self.partner}: acknowledged ({self.receipt_outcome})"
        if self.status == "rejected":
            return f"{self.partner}: rejected by the partner"
        if self.status == "published":
            return f"{self.partner}: published, no receipt yet"
        return f"{self.partner}: still pending (is the sidecar running?)"


@dataclass
class Departed:
    tenant_id: str
    export: ExportResult
    notices: list[PartnerNotice]
    departed_at: datetime


_SOURCES = "SELECT DISTINCT source_tenant FROM b2b_events LIMIT 3"

_PARTNERS = "SELECT tenant_id FROM b2b_partners WHERE status <> 'departed' ORDER BY tenant_id"

# Order events to partners still in the federation that the partner has not answered: after
# a departure event it would refuse them, so they must be answered first (or --force).
_UNANSWERED = """
    SELECT e.dest_tenant, count(*) FILTER (WHERE e.status = 'pending'), count(*) FILTER (WHERE e.status = 'published')
      FROM b2b_events e JOIN b2b_partners p ON p.tenant_id = e.dest_tenant AND p.status <> 'departed'
     WHERE e.module <> 'b2b' AND e.status IN ('pending', 'published')
     GROUP BY e.dest_tenant ORDER BY e.dest_tenant
"""

_DEPARTURE_EVENTS = """
    SELECT dest_tenant, event_id, status, receipt_outcome FROM b2b_events
     WHERE event_type = %(type)s AND event_id = ANY(%(ids)s) ORDER BY dest_tenant
"""

_ALREADY_ANNOUNCED = "SELECT dest_tenant, event_id FROM b2b_events WHERE event_type = %s"


def depart_tenant(plan: DeparturePlan, say: Say = lambda _line: None) -> Departed:
    """Export, announce, wait for receipts, mark departed (module docstring). Raises
    TenantAlreadyDeparted, DepartureRefused (nothing done), LifecycleError (bad input,
    unreachable), StepFailed (after the export: what was done and what to do)."""
    from yggdrasil.events.signing import encode_public_key
    from yggdrasil.federation.keys import SigningKeyError, load_signing_key

    entry = registry_entry(plan.central_dsn, plan.tenant_id)
    if entry is None:
        raise LifecycleError(f"tenant {plan.tenant_id} is not registered in ygg_central")
    status, changed_at, registered_key, _created = entry
    if status == "departed":
        raise TenantAlreadyDeparted(f"tenant {plan.tenant_id} already departed on "
                                    f"{changed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC; nothing was changed")
    try:
        signing_key = load_signing_key(plan.signing_key_path)
    except SigningKeyError as error:
        raise LifecycleError(str(error)) from None
    if encode_public_key(signing_key.public_key()) != registered_key:
        raise LifecycleError(f"the signing key {plan.signing_key_path} is not the one registered for "
                             f"{plan.tenant_id}; partners would refuse its departure events")
    partners, announced = _check_tenant_database(plan)
    if plan.export_dir.exists() and (not plan.export_dir.is_dir() or any(plan.export_dir.iterdir())):
        raise DepartureRefused(f"{plan.export_dir} exists and is not an empty folder; export into a new one")

    say(f"exporting {plan.tenant_id} to {plan.export_dir.absolute()}")
    try:
        export = export_tenant_database(plan.tenant_dsn, plan.export_dir, progress=_export_progress(say))
    except (ExportError, psycopg.Error) as error:
        raise LifecycleError(f"the export failed, nothing else was done: {_first_line(error)}") from None
    say(f"export        {export.folder} ({len(export.tables)} tables, {export.total_rows} rows; "
        f"manifest sha256 {export.manifest.sha256})")

    try:
        event_ids = asyncio.run(_announce(plan, signing_key, [p for p in partners if p not in announced]))
    except (psycopg.Error, OSError) as error:
        raise StepFailed(f"the export is in {export.folder}, but the departure events could not be written "
                         f"({_first_line(error)}); nothing else changed: run `ygg tenant depart` again "
                         "into a new export folder") from None
    event_ids.update(announced)
    for partner in sorted(event_ids):
        say(f"announced     {DEPARTURE_EVENT} to {partner}")
    if not event_ids:
        say("announced     no partners to tell")

    notices = _wait_for_receipts(plan.tenant_dsn, event_ids, plan.wait_seconds)
    for notice in notices:
        say(f"partner       {notice.describe()}")

    try:
        with _central(plan.central_dsn) as conn:
            row = conn.execute(_MARK_DEPARTED, (plan.tenant_id,)).fetchone()
    except (psycopg.Error, LifecycleError) as error:
        raise StepFailed(f"the export is in {export.folder} and the partners were told, but the registry "
                         f"still says {status} ({_first_line(error)}): run `ygg tenant depart` again "
                         "(it will not tell the partners twice) into a new export folder") from None
    if row is None:
        raise TenantAlreadyDeparted(f"tenant {plan.tenant_id} was marked departed by someone else meanwhile")
    say(f"registry      {plan.tenant_id} departed at {row[0].astimezone(UTC).isoformat()}")
    return Departed(plan.tenant_id, export, notices, row[0])


def _export_progress(say: Say) -> Callable[[str, int, bool], None]:
    def progress(table: str, rows: int, finished: bool) -> None:
        say(f"  {table}: {rows} rows" + ("" if finished else " ..."))
    return progress


def _check_tenant_database(plan: DeparturePlan) -> tuple[list[str], dict[str, UUID]]:
    """The partners to tell, and those already told by an earlier run that stopped short.
    Raises if the database is someone else's or order events still wait for answers."""
    try:
        with psycopg.connect(plan.tenant_dsn, connect_timeout=5, autocommit=True) as conn:
            sources = [row[0] for row in conn.execute(_SOURCES).fetchall()]
            partners = [row[0] for row in conn.execute(_PARTNERS).fetchall()]
            unanswered = conn.execute(_UNANSWERED).fetchall()
            announced = dict(conn.execute(_ALREADY_ANNOUNCED, (DEPARTURE_EVENT,)).fetchall())
    except psycopg.Error as error:
        raise LifecycleError(f"cannot read the tenant database: {_first_line(error)}") from None
    strangers = [source for source in sources if source != plan.tenant_id]
    if strangers:
        raise LifecycleError(f"this database sends events as {', '.join(strangers)}, not {plan.tenant_id}; "
                             "check --dsn")
    if unanswered and not plan.force:
        waiting = "; ".join(f"{dest}: {pending} pending, {published} awaiting a receipt"
                            for dest, pending, published in unanswered)
        raise DepartureRefused(f"order events to partners are not answered yet ({waiting}); keep the sidecar "
                               "running until they are, or pass --force (partners will refuse them once they "
                               "know of the departure); nothing was changed")
    return partners, announced


async def _announce(plan: DeparturePlan, signing_key: Any, partners: list[str]) -> dict[str, UUID]:
    """One signed departure event per partner, in one transaction of the tenant database."""
    from yggdrasil.events.catalogue import PartnerDepartedPayload
    from yggdrasil.tenant.adapters.outbox import enqueue_event

    if not partners:
        return {}
    payload = PartnerDepartedPayload(tenant_id=plan.tenant_id, departed_at=datetime.now(UTC), note=plan.note)
    event_ids = {}
    async with await psycopg.AsyncConnection.connect(plan.tenant_dsn, connect_timeout=5) as conn:
        async with conn.transaction():
            await conn.execute("SELECT set_config('ygg.actor', 'cli:tenant-depart', true)")
            for partner in partners:
                envelope = await enqueue_event(
                    conn, signing_key=signing_key, source=plan.tenant_id, destination=partner,
                    type=DEPARTURE_EVENT, aggregate_type=DEPARTURE_AGGREGATE, aggregate_id=plan.tenant_id,
                    payload=payload, state_hash=None)
                event_ids[partner] = envelope.event_id
    return event_ids


def _wait_for_receipts(dsn: str, event_ids: dict[str, UUID], seconds: float) -> list[PartnerNotice]:
    """Poll the outbox until every departure event is answered, or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            rows = conn.execute(_DEPARTURE_EVENTS, {"type": DEPARTURE_EVENT,
                                                    "ids": list(event_ids.values())}).fetchall()
        notices = [PartnerNotice(*row) for row in rows]
        if all(n.status in ("acknowledged", "rejected") for n in notices) or time.monotonic() >= deadline:
            return notices
        time.sleep(0.25)
