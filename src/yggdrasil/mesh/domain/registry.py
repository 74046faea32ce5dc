"""Tenants, partnerships and the registry document sidecars sync.

Status changes are declared as data (action -> allowed from, to); the database's CHECK
constraints are the backstop, these give the clear message.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from yggdrasil.events.signing import decode_public_key, key_id
from yggdrasil.mesh.errors import Conflict, InvalidInput

TENANT_ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
TENANT_STATUSES = ("active", "suspended", "departed")
MODULES = ("sales", "purchasing", "b2b")
APPROVAL_POLICIES = ("auto", "approve")
PARTNERSHIP_STATUSES = ("proposed", "active", "suspended", "ended", "declined")

# action -> (statuses it may start from, status it leads to)
TENANT_ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "suspend": (frozenset({"active"}), "suspended"),
    "reactivate": (frozenset({"suspended"}), "active"),
    # Departure is final: a departed tenant's id is never reused for someone else.
    "depart": (frozenset({"active", "suspended"}), "departed"),
}

PARTNERSHIP_ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "accept": (frozenset({"proposed"}), "active"),
    "decline": (frozenset({"proposed"}), "declined"),
    "suspend": (frozenset({"active"}), "suspended"),
    "resume": (frozenset({"suspended"}), "active"),
    "end": (frozenset({"proposed", "active", "suspended"}), "ended"),
}
# Only the invited side answers a proposal.
ANSWERS = frozenset({"accept", "decline"})
# A proposal between two tenants whose partnership is in one of these states starts afresh;
# in any other state the pair already has a live partnership or proposal.
REPROPOSABLE = frozenset({"ended", "declined"})
# Partnerships a sidecar needs to know about: live ones, and ended ones so that it stops
# trusting the partner.
LISTED_IN_REGISTRY = ("active", "suspended", "ended")


def tenant_transition(tenant_id: str, current: str, action: str) -> str:
    allowed_from, target = TENANT_ACTIONS[action]
    if current not in allowed_from:
        raise Conflict("tenant.invalid_transition",
                       f"tenant {tenant_id} is {current}; {action} applies only to a tenant that is "
                       f"{' or '.join(sorted(allowed_from))}")
    return target


def partnership_transition(partnership_id: int, current: str, action: str) -> str:
    allowed_from, target = PARTNERSHIP_ACTIONS[action]
    if current not in allowed_from:
        raise Conflict("partnership.invalid_transition",
                       f"partnership {partnership_id} is {current}; {action} applies only to a partnership "
                       f"that is {' or '.join(sorted(allowed_from))}")
    return target


def check_answering_side(partnership_id: int, proposed_by: str, sides: tuple[str, str], by: str, action: str) -> None:
    """Accept and decline come from the invited side, never from the proposer."""
    if by not in sides:
        raise InvalidInput("partnership.not_a_side",
                           f"{by} is not a side of partnership {partnership_id} ({sides[0]} and {sides[1]})")
    if by == proposed_by:
        invited = sides[1] if sides[0] == proposed_by else sides[0]
        raise InvalidInput("partnership.own_proposal",
                           f"{by} proposed partnership {partnership_id}; only {invited} can {action} it")


def ordered_pair(a: str, b: str) -> tuple[str, str]:
    """A partnership is stored once per pair, ids in order (see 0001_mesh_registry.sql)."""
    return (a, b) if a < b else (b, a)


# -- validation ---------------------------------------------------------------------------------

def validate_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidInput("tenant.invalid_id",
                           f"tenant id {tenant_id!r} must be 2-63 characters of a-z, 0-9 and '-', "
                           "starting with a letter")
    return tenant_id


def validate_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidInput("tenant.invalid_name", "the name must be 1 to 200 characters")
    return name


def validate_api_url(url: str) -> str:
    """An absolute http(s) URL without query or fragment; a trailing '/' is dropped."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise InvalidInput("tenant.invalid_api_url", f"api_url {url!r} must be an absolute http:// or https:// URL")
    if parts.query or parts.fragment:
        raise InvalidInput("tenant.invalid_api_url", f"api_url {url!r} must not have a query or fragment")
    return url.rstrip("/")


def key_id_of(public_key: str) -> str:
    """The key id of a base64 Ed25519 public key; raises InvalidInput for anything else."""
    try:
        return key_id(decode_public_key(public_key))
    except ValueError as error:
        raise InvalidInput("tenant.invalid_public_key",
                           f"public_key must be base64 of a 32-byte Ed25519 public key: {error}") from None


def validate_modules(modules: list[str]) -> list[str]:
    unknown = sorted(set(modules) - set(MODULES))
    if not modules or unknown:
        raise InvalidInput("partnership.invalid_modules",
                           f"modules must be a non-empty subset of {', '.join(MODULES)}"
                           + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    return sorted(set(modules), key=MODULES.index)


def validate_policy(policy: str) -> str:
    if policy not in APPROVAL_POLICIES:
        raise InvalidInput("partnership.invalid_policy",
                           f"approval_policy must be one of {', '.join(APPROVAL_POLICIES)}")
    return policy


# -- the registry document ----------------------------------------------------------------------

def effective_status(tenant_status: str, partnership_status: str) -> str:
    """What a sidecar should think of a partner: `active` only when both the partner tenant and
    the partnership are; a departed tenant or an ended partnership is over (`departed`);
    anything else is paused (`suspended`)."""
    if tenant_status == "active" and partnership_status == "active":
        return "active"
    if tenant_status == "departed" or partnership_status == "ended":
        return "departed"
    return "suspended"


@dataclass(frozen=True)
class RegistryPartner:
    tenant_id: str
    name: str
    public_key: str
    key_id: str
    approval_policy: str
    modules: tuple[str, ...]
    tenant_status: str
    partnership_status: str

    def public(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id, "name": self.name, "public_key": self.public_key,
            "key_id": self.key_id, "approval_policy": self.approval_policy, "modules": list(self.modules),
            "status": effective_status(self.tenant_status, self.partnership_status),
            "tenant_status": self.tenant_status, "partnership_status": self.partnership_status,
        }


def registry_document(tenant_id: str, partners: list[RegistryPartner]) -> dict[str, object]:
    return {"tenant_id": tenant_id,
            "partners": [p.public() for p in sorted(partners, key=lambda p: p.tenant_id)]}


def canonical_json(document: object) -> bytes:
    """One byte string per document (sorted keys, no spaces), so equal content, equal ETag."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def strong_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: a list of entity tags or `*`, compared weakly."""
    if not if_none_match:
        return False
    candidates = [tag.strip() for tag in if_none_match.split(",")]
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in candidates)
