"""The PostgreSQL client programs backups need (pg_dump, pg_restore), and safe ways to call them.

Where the programs come from, first match wins: the `pg_bin_dir` setting, the `pgserver`
package's binaries (PostgreSQL 16, the same build as the embedded server), then PATH.
pg_dump refuses to dump a server newer than itself, so an old distribution pg_dump on PATH is
the last resort, not the first.

Passwords never appear on a command line (where `ps` shows them to every user of the host):
the DSN handed to the program has its password removed, and the password travels in the
child's environment as PGPASSWORD.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg


class PgToolNotFound(Exception):
    """A PostgreSQL client program is in none of the places we look."""


def find_pg_tool(name: str, pg_bin_dir: Path | None = None) -> Path:
    """The path of the program `name` (say "pg_dump"). Raises PgToolNotFound."""
    if pg_bin_dir is not None:
        candidate = Path(pg_bin_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        raise PgToolNotFound(f"{name} not found in pg_bin_dir {pg_bin_dir}")
    try:
        from yggdrasil.devstack.postgres import pg_binary

        candidate = pg_binary(name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    except RuntimeError:  # pgserver is not installed: fall through to PATH
        pass
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    raise PgToolNotFound(f"{name} not found: set pg_bin_dir (YGG_PG_BIN_DIR), install pgserver, "
                         f"or put PostgreSQL's client programs on PATH")


def tool_version(program: Path) -> str:
    """'16.2' for a program that prints 'pg_dump (PostgreSQL) 16.2'."""
    out = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip().rsplit(" ", 1)[-1]


@dataclass(frozen=True)
class ClientDsn:
    """A DSN split for a child process: the conninfo to pass, and its environment."""

    conninfo: str   # no password in it
    env: dict[str, str]


def client_dsn(dsn: str) -> ClientDsn:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return ClientDsn(psycopg.conninfo.make_conninfo(**params), env)


def dsn_without_password(dsn: str) -> str:
    """The DSN as it may be shown and stored: every part but the password."""
    return client_dsn(dsn).conninfo


def database_name(dsn: str) -> str | None:
    return psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")  # type: ignore[return-value]


def first_line(text: str) -> str:
    """The first meaningful line of a program's or driver's error output, for one-line errors."""
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            return line
    return ""
