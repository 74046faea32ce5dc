"""How ops/export.py encodes one value for JSON and for CSV (no database)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from yggdrasil.ops.export import BOOLEAN, FLOAT, INTEGER, JSON, TEXT, csv_field, csv_line, json_row, plan_column

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("value", "kind", "expected"), [
    (None, TEXT, ""),
    ("", TEXT, '""'),
    ("plain", TEXT, "plain"),
    ("a,b", TEXT, '"a,b"'),
    ('say "hi"', TEXT, '"say ""hi"""'),
    ("two\nlines", TEXT, '"two\nlines"'),
    ("cr\rlf", TEXT, '"cr\rlf"'),
    (" padded", TEXT, '" padded"'),
    ("東京 🚀", TEXT, "東京 🚀"),
    (True, BOOLEAN, "true"),
    (False, BOOLEAN, "false"),
    (9007199254740993, INTEGER, "9007199254740993"),
    (float("nan"), FLOAT, "NaN"),
    (float("-inf"), FLOAT, "-Infinity"),
    (0.1, FLOAT, "0.1"),
    ('{"a": [1, "x,y"]}', JSON, '"{""a"": [1, ""x,y""]}"'),
])
def test_csv_field_quotes_only_what_needs_it_and_keeps_null_apart_from_empty(value, kind, expected):
    assert csv_field(value, kind) == expected


def test_a_csv_line_reads_back_with_the_standard_csv_reader():
    kinds = [INTEGER, TEXT, TEXT, TEXT, BOOLEAN]
    rows = [(1, 'He said "hello", then left', "line one\nline two\r\nthree", "Ærø 🚀", True),
            (2, "", None, "  spaces  ", False)]
    text = "".join(csv_line(kinds, row) for row in rows)
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [["1", 'He said "hello", then left', "line one\nline two\r\nthree", "Ærø 🚀", "true"],
                      ["2", "", "", "  spaces  ", "false"]]


def test_a_json_row_embeds_json_columns_as_values_and_escapes_text():
    names = [json.dumps(n) for n in ("id", "name", "payload", "ratio", "note")]
    row = (7, 'quote " and \\ backslash\n', '{"price": "24.90", "lines": [1, 2]}', float("inf"), None)
    decoded = json.loads(json_row(names, [INTEGER, TEXT, JSON, FLOAT, TEXT], row))
    assert decoded == {"id": 7, "name": 'quote " and \\ backslash\n',
                       "payload": {"price": "24.90", "lines": [1, 2]}, "ratio": "Infinity", "note": None}


@pytest.mark.parametrize(("base_type", "category", "kind", "encoding"), [
    ("numeric", "N", TEXT, "decimal string"),
    ("money", "N", TEXT, "decimal string"),
    ("int8", "N", INTEGER, "integer"),
    ("float8", "N", FLOAT, "float"),
    ("timestamptz", "D", TEXT, "iso8601"),
    ("date", "D", TEXT, "iso8601"),
    ("interval", "T", TEXT, "iso8601 duration"),
    ("bytea", "U", TEXT, "base64"),
    ("jsonb", "U", JSON, "json"),
    ("_text", "A", JSON, "json array"),
    ("uuid", "U", TEXT, "text"),
    ("bool", "B", BOOLEAN, "boolean"),
])
def test_each_column_type_has_one_declared_encoding(base_type, category, kind, encoding):
    plan = plan_column(base_type, category)
    assert (plan.kind, plan.encoding) == (kind, encoding)
    assert "{}" in plan.template.replace("{{}}", "")
