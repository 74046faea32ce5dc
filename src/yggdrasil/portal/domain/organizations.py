"""Organization names and slugs (the short name in URLs: /orgs/<slug>)."""

from __future__ import annotations

import re
import secrets
import unicodedata

from yggdrasil.portal.errors import InvalidInput

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
NAME_MAX = 200


def check_name(name: str) -> str:
    """Kept exactly as given: quotes, angle brackets and all are a name's business."""
    if not name or not name.strip():
        raise InvalidInput("the organization name must not be empty")
    if len(name) > NAME_MAX:
        raise InvalidInput(f"the organization name is longer than {NAME_MAX} characters")
    return name


def check_slug(slug: str) -> str:
    if not SLUG_PATTERN.match(slug):
        raise InvalidInput(f"{slug!r} is not a valid slug: 2-63 characters, lower-case letters, digits and "
                           "hyphens, starting with a letter or digit")
    return slug


def slug_from_name(name: str) -> str:
    """A URL-safe slug from the name (accents folded, everything else to hyphens); a random one
    when nothing of the name survives (a name of only punctuation, say)."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:50].strip("-")
    return slug if len(slug) >= 2 else f"org-{secrets.token_hex(3)}"


def with_suffix(slug: str) -> str:
    """Another candidate when the slug is taken."""
    return f"{slug[:55]}-{secrets.token_hex(3)}"
