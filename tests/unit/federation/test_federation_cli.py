"""`ygg keys` and the signing key file."""

from __future__ import annotations

import stat

import pytest
from typer.testing import CliRunner

from yggdrasil.events.signing import decode_public_key
from yggdrasil.federation.cli import keys_app
from yggdrasil.federation.keys import SigningKeyError, load_signing_key

pytestmark = pytest.mark.unit


def test_keys_generate_writes_a_private_key_only_its_owner_can_read_and_prints_the_public_key(tmp_path):
    path = tmp_path / "keys" / "acme.key"
    result = CliRunner().invoke(keys_app, ["generate", "--out", str(path)])
    assert result.exit_code == 0, result.output
    public_text = result.stdout.strip().splitlines()[-1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(path).public_key() == decode_public_key(public_text)
    shown = CliRunner().invoke(keys_app, ["show", "--path", str(path)])
    assert shown.stdout.strip() == public_text


def test_keys_generate_refuses_to_replace_an_existing_key(tmp_path):
    path = tmp_path / "acme.key"
    assert CliRunner().invoke(keys_app, ["generate", "--out", str(path)]).exit_code == 0
    before = path.read_text()
    result = CliRunner().invoke(keys_app, ["generate", "--out", str(path)])
    assert result.exit_code == 2
    assert path.read_text() == before


def test_a_key_file_that_holds_no_key_is_refused_with_its_path(tmp_path):
    path = tmp_path / "broken.key"
    path.write_text("not a key\n")
    with pytest.raises(SigningKeyError, match="broken.key"):
        load_signing_key(path)
    with pytest.raises(SigningKeyError, match="YGG_SIGNING_KEY_PATH"):
        load_signing_key(None)
