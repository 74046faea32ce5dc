"""`ygg tenant export`: every table of a tenant database, in formats anyone can read.

For each table, `<table>.json` (an array of objects, one per row, keyed by column name) and
`<table>.csv` (a header row, then one line per row), plus `schema.json` (every table's columns
with their types and nullability, primary key, unique constraints and foreign keys, read from
pg_catalog) and, written last, `manifest.json` (row counts, byte sizes and sha256 of every
file). The audit trail is a table like the others and is exported whole.

Consistency: everything is read in one REPEATABLE READ READ ONLY transaction, so all files
describe one snapshot of the database however long the export takes and whatever is written
meanwhile. Memory: rows are read through a server-side cursor, a batch at a time, and written
as they come, so a table of any size passes through a bounded buffer.

Values, the same in JSON and CSV:

    numeric, money        decimal string, exactly as stored ("24.9000")
    timestamps, dates     ISO 8601 strings, timestamptz in UTC ("2026-05-01T10:00:00.5+00:00")
    interval              ISO 8601 duration ("P1DT2H")
    bytea                 base64 (standard alphabet, padded, no line breaks)
    json, jsonb, arrays   JSON values (in CSV: their compact JSON text)
    integers, floats      JSON numbers (NaN and infinities as the strings "NaN", "Infinity")
    boolean               true / false
    everything else       the PostgreSQL text form (text, uuid, inet, enums ...)

CSV follows RFC 4180 (comma, double quotes doubled, CRLF line ends, UTF-8) with PostgreSQL's
convention for NULL: an empty unquoted field is NULL, `""` is the empty string. `COPY ... FROM
... WITH (FORMAT csv, HEADER)` reads the files back into the same tables.

The export is written to a hidden sibling folder and renamed into place when complete: the
folder named by `--out` either holds a whole export, with its manifest, or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg import sql

FORMAT = "yggdrasil-tenant-export"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = "schema.json"
# Rows per round trip of the server-side cursor, and how often a long table reports progress.
DEFAULT_BATCH_ROWS = 2000
PROGRESS_EVERY_ROWS = 100_000
# Text buffered before a write to the file: bounded, whatever the table's size.
_FLUSH_BYTES = 1 << 20

CSV_DIALECT = {
    "encoding": "utf-8", "delimiter": ",", "quote": '"', "escape": "quote doubled", "line_terminator": "\r\n",
    "header": True, "null": "an empty unquoted field; the empty string is written as \"\"",
}


class ExportError(Exception):
    """The export cannot start or could not finish; one readable line."""


# -- how each column travels --------------------------------------------------------------------

# What a column's value is once selected, for both writers: `text` (a string from the server,
# however it was converted), `integer`, `float`, `boolean`, or `json` (text that is a JSON value).
TEXT, INTEGER, FLOAT, BOOLEAN, JSON = "text", "integer", "float", "boolean", "json"

_INTEGER_TYPES = {"int2", "int4", "int8", "oid", "xid", "cid"}
_FLOAT_TYPES = {"float4", "float8"}
_TIMESTAMP_TYPES = {"timestamp", "timestamptz", "date", "time", "timetz"}


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is selected (`expression`), carried (`kind`) and described (`encoding`)."""

    kind: str
    encoding: str
    template: str  # SQL with {} for the quoted column name


def plan_column(base_type: str, category: str) -> ColumnPlan:
    """`base_type` is pg_type.typname of the column's type (of a domain's base type);
    `category` its typcategory ('A' for arrays)."""
    if category == "A":
        return ColumnPlan(JSON, "json array", "to_json({})::text")
    if base_type in ("numeric", "money"):
        cast = "{}::numeric::text" if base_type == "money" else "{}::text"
        return ColumnPlan(TEXT, "decimal string", cast)
    if base_type in _INTEGER_TYPES:
        return ColumnPlan(INTEGER, "integer", "{}")
    if base_type in _FLOAT_TYPES:
        return ColumnPlan(FLOAT, "float", "{}")
    if base_type == "bool":
        return ColumnPlan(BOOLEAN, "boolean", "{}")
    if base_type in _TIMESTAMP_TYPES:
        # to_json writes ISO 8601 ("T" between date and time), unlike the text output.
        return ColumnPlan(TEXT, "iso8601", "to_json({}) #>> '{{}}'")
    if base_type == "interval":
        return ColumnPlan(TEXT, "iso8601 duration", "{}::text")  # with intervalstyle iso_8601
    if base_type == "bytea":
        # encode() breaks base64 lines every 76 characters; one unbroken string is wanted.
        return ColumnPlan(TEXT, "base64", "translate(encode({}, 'base64'), E'\\n', '')")
    if base_type in ("json", "jsonb"):
        return ColumnPlan(JSON, "json", "{}::text")
    return ColumnPlan(TEXT, "text", "{}::text")


# -- one value, two encodings -------------------------------------------------------------------


def _float_value(value: float) -> str | float:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def json_value(value: Any, kind: str) -> str:
    """The JSON text of one selected value."""
    if value is None:
        return "null"
    if kind == JSON:
        return value  # already JSON text, from the server
    if kind == FLOAT:
        return json.dumps(_float_value(value))
    return json.dumps(value, ensure_ascii=False)


_CSV_SPECIAL = frozenset(',"\r\n')


def csv_field(value: Any, kind: str) -> str:
    """One CSV field: NULL is empty and unquoted, a string that is empty, holds a comma, quote
    or line break, or has surrounding spaces is quoted with its quotes doubled."""
    if value is None:
        return ""
    if kind == BOOLEAN:
        return "true" if value else "false"
    if kind == INTEGER:
        return str(value)
    if kind == FLOAT:
        value = _float_value(value)
        text = value if isinstance(value, str) else json.dumps(value)
    else:
        text = value
    if text == "" or text != text.strip() or not _CSV_SPECIAL.isdisjoint(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def json_row(names_json: Sequence[str], kinds: Sequence[str], row: Sequence[Any]) -> str:
    """One row as a JSON object; `names_json` are the column names, already JSON-encoded."""
    return "{" + ", ".join(f"{name}: {json_value(value, kind)}"
                           for name, kind, value in zip(names_json, kinds, row, strict=True)) + "}"


def csv_line(kinds: Sequence[str], row: Sequence[Any]) -> str:
    return ",".join(csv_field(value, kind) for kind, value in zip(kinds, row, strict=True)) + "\r\n"


# -- the schema, from pg_catalog ----------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str          # as PostgreSQL writes it: "numeric(14,4)", "timestamp with time zone"
    nullable: bool
    default: str | None
    identity: bool
    plan: ColumnPlan


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: list[str]
    references_table: str
    references_columns: list[str]
    on_delete: str
    on_update: str


@dataclass
class Table:
    oid: int
    schema: str
    name: str
    comment: str | None
    columns: list[Column] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    unique: list[list[str]] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)

    @property
    def qualified_name(self) -> str:
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"

    @property
    def file_stem(self) -> str:
        return self.qualified_name

    def describe(self) -> dict[str, Any]:
        return {
            "table": self.qualified_name,
            "schema": self.schema,
            "name": self.name,
            "comment": self.comment,
            "columns": [{"name": c.name, "type": c.type, "nullable": c.nullable, "default": c.default,
                         "identity": c.identity, "export_encoding": c.plan.encoding} for c in self.columns],
            "primary_key": self.primary_key,
            "unique": self.unique,
            "foreign_keys": [{"name": fk.name, "columns": fk.columns, "references_table": fk.references_table,
                              "references_columns": fk.references_columns, "on_delete": fk.on_delete,
                              "on_update": fk.on_update} for fk in self.foreign_keys],
        }


_TABLES = """
    SELECT c.oid::int8, n.nspname, c.relname, obj_description(c.oid, 'pg_class')
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
     ORDER BY n.nspname, c.relname
"""

# A domain column is described by its own type and exported as its base type.
_COLUMNS = """
    SELECT a.attrelid::int8, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid), a.attidentity <> '', base.typname, base.typcategory
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      JOIN pg_type base ON base.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = ANY(%(oids)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attrelid, a.attnum
"""

_ACTIONS = {"a": "no action", "r": "restrict", "c": "cascade", "n": "set null", "d": "set default"}

_CONSTRAINTS = """
    SELECT con.conrelid::int8, con.conname, con.contype,
           ARRAY(SELECT att.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, pos)
                   JOIN pg_attribute att ON att.attrelid = con.conrelid AND att.attnum = k.attnum
                  ORDER BY k.pos)::text[],
           CASE WHEN con.contype = 'f' THEN
               (SELECT CASE WHEN rn.nspname = 'public' THEN rc.relname ELSE rn.nspname || '.' || rc.relname END
                  FROM pg_class rc JOIN pg_namespace rn ON rn.oid = rc.relnamespace WHERE rc.oid = con.confrelid)
           END,
           ARRAY(SELECT att.attname FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, pos)
                   JOIN pg_attribute att ON att.attrelid = con.confrelid AND att.attnum = k.attnum
                  ORDER BY k.pos)::text[],
           con.confdeltype::text, con.confupdtype::text
      FROM pg_constraint con
     WHERE con.conrelid = ANY(%(oids)s::oid[]) AND con.contype IN ('p', 'u', 'f')
     ORDER BY con.conrelid, con.contype, con.conname
"""


def describe_tables(conn: psycopg.Connection) -> list[Table]:
    """Every table of the database (not partitions: their parent holds their rows), with its
    columns and keys, in schema and name order."""
    tables = [Table(oid, schema, name, comment) for oid, schema, name, comment in conn.execute(_TABLES).fetchall()]
    by_oid = {table.oid: table for table in tables}
    oids = list(by_oid)
    for oid, name, type_name, nullable, default, identity, base_type, category in conn.execute(
            _COLUMNS, {"oids": oids}).fetchall():
        plan = plan_column(base_type, category)
        by_oid[oid].columns.append(Column(name, type_name, nullable, default, identity, plan))
    for oid, name, kind, columns, ref_table, ref_columns, on_delete, on_update in conn.execute(
            _CONSTRAINTS, {"oids": oids}).fetchall():
        table = by_oid[oid]
        if kind == "p":
            table.primary_key = list(columns)
        elif kind == "u":
            table.unique.append(list(columns))
        else:
            table.foreign_keys.append(ForeignKey(name, list(columns), ref_table, list(ref_columns),
                                                 _ACTIONS.get(on_delete, on_delete),
                                                 _ACTIONS.get(on_update, on_update)))
    return tables


def select_statement(table: Table) -> sql.Composed:
    """The table's rows, each column converted for export, in primary key order (when it has one)."""
    columns = sql.SQL(", ").join(
        sql.SQL(column.plan.template).format(sql.Identifier(column.name)) for column in table.columns)
    statement = sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(table.schema, table.name))
    if table.primary_key:
        statement += sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(map(sql.Identifier, table.primary_key)))
    return statement


# -- files --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenFile:
    path: str          # relative to the export folder
    bytes: int
    sha256: str

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}


class _HashingWriter:
    """Text in, UTF-8 bytes out to a file, with their sha256 and count, buffered."""

    def __init__(self, folder: Path, name: str):
        self.name = name
        self._file: BinaryIO = open(folder / name, "wb")  # noqa: SIM115 - closed in close()
        self._digest = hashlib.sha256()
        self._size = 0
        self._pending: list[str] = []
        self._pending_chars = 0

    def write(self, text: str) -> None:
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        data = "".join(self._pending).encode("utf-8")
        self._pending, self._pending_chars = [], 0
        self._digest.update(data)
        self._size += len(data)
        self._file.write(data)

    def close(self) -> WrittenFile:
        self._flush()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return WrittenFile(self.name, self._size, self._digest.hexdigest())

    def abandon(self) -> None:
        self._file.close()


def _write_json_document(folder: Path, name: str, document: Any) -> WrittenFile:
    writer = _HashingWriter(folder, name)
    writer.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return writer.close()


# -- the export ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedTable:
    table: str
    rows: int
    json_file: WrittenFile
    csv_file: WrittenFile


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    tables: list[ExportedTable]
    manifest: WrittenFile

    @property
    def total_rows(self) -> int:
        return sum(table.rows for table in self.tables)


# progress(table, rows so far, finished)
Progress = Callable[[str, int, bool], None]


def export_tenant_database(dsn: str, out_dir: Path, *, progress: Progress | None = None,
                           batch_rows: int = DEFAULT_BATCH_ROWS) -> ExportResult:
    """Export every table of the database at `dsn` into `out_dir` (which must not exist or be
    empty). Raises ExportError for a folder that holds something, psycopg errors if the
    database fails; a failed export leaves `out_dir` as it was."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} exists and is not an empty folder; export into a new one")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        result = _export_into(dsn, staging, progress or (lambda *_: None), batch_rows)
        os.replace(staging, out_dir)  # an empty `out_dir` is replaced; rename is atomic
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out_dir, result.tables, result.manifest)


def _export_into(dsn: str, folder: Path, progress: Progress, batch_rows: int) -> ExportResult:
    with psycopg.connect(dsn, application_name="ygg-export") as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            # The snapshot is taken by the transaction's first statement; every later one
            # (the schema, each table) reads that same state of the database.
            database, server_version, snapshot = conn.execute(
                "SELECT current_database(), current_setting('server_version'), pg_current_snapshot()::text"
            ).fetchone()
            conn.execute("SET LOCAL TIME ZONE 'UTC'")
            conn.execute("SET LOCAL intervalstyle = 'iso_8601'")
            tables = describe_tables(conn)
            schema_file = _write_json_document(folder, SCHEMA_FILE, {
                "format": FORMAT, "format_version": FORMAT_VERSION, "database": database,
                "tables": [table.describe() for table in tables],
            })
            exported = [_export_table(conn, table, folder, progress, batch_rows) for table in tables]
    manifest = _write_json_document(folder, MANIFEST_FILE, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "database": database,
        "server_version": server_version,
        "exported_at": datetime.now(UTC).isoformat(),
        "consistency": "one REPEATABLE READ READ ONLY transaction",
        "snapshot": snapshot,
        "csv": CSV_DIALECT,
        "schema": schema_file.describe(),
        "tables": [{"table": t.table, "rows": t.rows, "json": t.json_file.describe(), "csv": t.csv_file.describe()}
                   for t in exported],
        "total_rows": sum(t.rows for t in exported),
    })
    return ExportResult(folder, exported, manifest)


def _export_table(conn: psycopg.Connection, table: Table, folder: Path, progress: Progress,
                  batch_rows: int) -> ExportedTable:
    kinds = [column.plan.kind for column in table.columns]
    names_json = [json.dumps(column.name, ensure_ascii=False) for column in table.columns]
    json_out = _HashingWriter(folder, f"{table.file_stem}.json")
    csv_out = _HashingWriter(folder, f"{table.file_stem}.csv")
    rows = 0
    try:
        csv_out.write(",".join(csv_field(column.name, TEXT) for column in table.columns) + "\r\n")
        json_out.write("[")
        # A server-side cursor: the server holds the result, we fetch `batch_rows` at a time.
        with conn.cursor(name=f"ygg_export_{table.oid}") as cur:
            cur.itersize = batch_rows
            cur.execute(select_statement(table))
            for row in cur:
                json_out.write(("\n" if rows == 0 else ",\n") + json_row(names_json, kinds, row))
                csv_out.write(csv_line(kinds, row))
                rows += 1
                if rows % PROGRESS_EVERY_ROWS == 0:
                    progress(table.qualified_name, rows, False)
        json_out.write("\n]\n" if rows else "]\n")
        exported = ExportedTable(table.qualified_name, rows, json_out.close(), csv_out.close())
    except BaseException:
        for writer in (json_out, csv_out):
            with contextlib.suppress(Exception):
                writer.abandon()
        raise
    progress(table.qualified_name, rows, True)
    return exported


# -- reading an export back (verification) --------------------------------------------------------


def verify_export(folder: Path) -> list[str]:
    """Problems with an export folder: files missing or whose size or sha256 differs from the
    manifest. An empty list means every file is as written."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return [f"{MANIFEST_FILE}: {error}"]
    problems = []
    entries: Iterable[dict[str, Any]] = [manifest["schema"], *(t[kind] for t in manifest["tables"]
                                                               for kind in ("json", "csv"))]
    for entry in entries:
        path = folder / entry["path"]
        try:
            data = path.read_bytes()
        except OSError as error:
            problems.append(f"{entry['path']}: {error.strerror}")
            continue
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']}: differs from the manifest")
    return problems
