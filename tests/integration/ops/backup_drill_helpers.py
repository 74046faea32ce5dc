"""Helpers for the backup and restore tests: the real `ygg` command, and a fingerprint of a
database (row count and content digest of every table) to compare a restore with its source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql

YGG = Path(sys.executable).parent / "ygg"


def run_ygg(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    # YGG_CONFIG points nowhere so a ygg.toml in the working directory cannot change the test.
    environment = {**os.environ, "YGG_CONFIG": "/nonexistent/ygg.toml", "YGG_LOG_JSON": "false", **env}
    return subprocess.run([str(YGG), *args], capture_output=True, text=True, timeout=timeout, env=environment)


def fingerprint(dsn: str) -> dict[str, tuple[int, str]]:
    """{table: (rows, md5 of all rows in a fixed order)} for every table of the public schema."""
    with psycopg.connect(dsn) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename").fetchall()]
        result = {}
        for table in tables:
            query = sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                            "FROM {} AS t").format(sql.Identifier(table))
            count, digest = conn.execute(query).fetchone()
            result[table] = (count, digest)
        return result


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def only_run(backup_dir: Path) -> Path:
    runs = [p for p in backup_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]
