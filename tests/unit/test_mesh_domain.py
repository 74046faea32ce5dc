"""The mesh's rules without I/O: health classification, effective registry status, ETags,
status transitions, tenant tokens and the sidecar's check of a registry answer."""

import json

import pytest

from yggdrasil.events.signing import encode_public_key, generate_keypair, key_id
from yggdrasil.federation.registry_sync import RegistrySyncError, parse_registry
from yggdrasil.mesh.domain import registry as rules
from yggdrasil.mesh.domain.health import classify_answer, classify_failure
from yggdrasil.mesh.errors import Conflict, InvalidInput
from yggdrasil.tenant.auth import new_token, token_tenant

pytestmark = pytest.mark.unit


def _health(status: str, **extra: object) -> bytes:
    return json.dumps({"status": status, "tenant_id": "acme", "database": {"state": "up"}, **extra}).encode()


def test_a_tenant_that_says_ok_quickly_is_up_and_a_slow_one_degraded() -> None:
    assert classify_answer("acme", 200, _health("ok"), 12.0, 2000).status == "up"
    slow = classify_answer("acme", 200, _health("ok"), 2500.0, 2000)
    assert (slow.status, slow.detail) == ("degraded", "slow: answered in 2500 ms (limit 2000 ms)")
    stalled = classify_answer("acme", 200, _health("ok", federation={"outbox_stalled": True}), 5.0, 2000)
    assert stalled.status == "up" and "outbox stalled" in stalled.detail


def test_a_tenant_whose_database_is_down_is_degraded_whether_it_answers_200_or_503() -> None:
    body = json.dumps({"status": "degraded", "tenant_id": "acme", "database": {"state": "down"}}).encode()
    for code in (200, 503):
        observed = classify_answer("acme", code, body, 5.0, 2000)
        assert (observed.status, observed.detail) == ("degraded", "tenant reports degraded (database down)")


def test_errors_garbage_and_the_wrong_tenant_count_as_down() -> None:
    assert classify_answer("acme", 500, _health("ok"), 5.0, 2000).status == "down"
    assert classify_answer("acme", 200, b"<html>hello</html>", 5.0, 2000).status == "down"
    impostor = classify_answer("acme", 200, json.dumps({"status": "ok", "tenant_id": "globex"}).encode(), 5.0, 2000)
    assert impostor.status == "down" and "'globex'" in impostor.detail
    refused = classify_failure("cannot connect")
    assert (refused.status, refused.latency_ms) == ("down", None)


def test_a_partner_is_active_only_when_both_the_tenant_and_the_partnership_are() -> None:
    assert rules.effective_status("active", "active") == "active"
    assert rules.effective_status("suspended", "active") == "suspended"
    assert rules.effective_status("active", "suspended") == "suspended"
    assert rules.effective_status("departed", "active") == "departed"
    assert rules.effective_status("active", "ended") == "departed"


def test_etags_are_over_canonical_bytes_and_if_none_match_compares_weakly() -> None:
    a = rules.canonical_json({"b": 1, "a": [1, 2]})
    assert a == b'{"a":[1,2],"b":1}' and rules.strong_etag(a) == rules.strong_etag(rules.canonical_json({"a": [1, 2], "b": 1}))
    tag = rules.strong_etag(a)
    assert rules.etag_matches(tag, tag) and rules.etag_matches(f'"x", W/{tag}', tag) and rules.etag_matches("*", tag)
    assert not rules.etag_matches(None, tag) and not rules.etag_matches('"other"', tag)


def test_status_changes_are_declared_and_refused_with_the_reason() -> None:
    assert rules.tenant_transition("acme", "active", "suspend") == "suspended"
    with pytest.raises(Conflict, match="tenant acme is departed; reactivate applies only to a tenant that is suspended"):
        rules.tenant_transition("acme", "departed", "reactivate")
    assert rules.partnership_transition(7, "proposed", "accept") == "active"
    with pytest.raises(Conflict, match="partnership 7 is declined"):
        rules.partnership_transition(7, "declined", "suspend")
    with pytest.raises(InvalidInput, match="only bravo can accept it"):
        rules.check_answering_side(7, "acme", ("acme", "bravo"), "acme", "accept")


def test_a_tenant_token_names_its_tenant_and_older_tokens_name_none() -> None:
    token = new_token("acme-2")
    assert token.startswith("ygg_acme-2.") and token_tenant(token) == "acme-2"
    assert token_tenant("ygg_" + "A" * 43) is None
    assert token_tenant("ygg_acme.") is None
    assert token_tenant("ygg_acme.short") is None
    assert token_tenant("Bearer ygg_acme." + "x" * 43) is None


def _entry(**overrides: object) -> dict[str, object]:
    public = generate_keypair()[1]
    return {"tenant_id": "bravo", "name": "Bravo", "public_key": encode_public_key(public), "key_id": key_id(public),
            "approval_policy": "auto", "status": "active", "modules": ["sales"], **overrides}


def test_the_sidecar_refuses_a_registry_answer_it_cannot_trust_whole() -> None:
    good = _entry()
    assert [e.tenant_id for e in parse_registry({"tenant_id": "acme", "partners": [good]}, "acme")] == ["bravo"]
    for document, reason in [
        ({"tenant_id": "globex", "partners": []}, "another tenant"),
        ({"tenant_id": "acme", "partners": [_entry(key_id="0" * 16)]}, "does not match"),
        ({"tenant_id": "acme", "partners": [_entry(status="exiled")]}, "unknown policy or status"),
        ({"tenant_id": "acme", "partners": [_entry(tenant_id="acme")]}, "its own partner"),
        ({"tenant_id": "acme", "partners": [{"tenant_id": "bravo"}]}, "malformed"),
    ]:
        with pytest.raises(RegistrySyncError, match=reason):
            parse_registry(document, "acme")
