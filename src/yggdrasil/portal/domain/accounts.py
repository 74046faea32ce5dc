"""Users' credentials: email rules, password hashing (argon2id), session and CSRF tokens, and
the sign-in throttling policy. No I/O here; the adapters store what these functions produce."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from yggdrasil.portal.errors import InvalidInput

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EMAIL_MAX = 254
DISPLAY_NAME_MAX = 200
PASSWORD_MIN = 10
PASSWORD_MAX = 1024  # argon2 takes any length; this only bounds the work a request can cause


def check_email(email: str) -> str:
    """The address as entered (surrounding blanks removed). Comparisons use `email_key`."""
    email = email.strip()
    if len(email) > EMAIL_MAX or not _EMAIL.match(email):
        raise InvalidInput(f"{email!r} is not an email address")
    return email


def email_key(email: str) -> str:
    """What identifies an account: the address without case (the database's unique index
    is on lower(email) too)."""
    return email.strip().lower()


def check_display_name(name: str) -> str:
    if not name or not name.strip():
        raise InvalidInput("the display name must not be empty")
    if len(name) > DISPLAY_NAME_MAX:
        raise InvalidInput(f"the display name is longer than {DISPLAY_NAME_MAX} characters")
    return name


def check_new_password(password: str) -> str:
    if len(password) < PASSWORD_MIN:
        raise InvalidInput(f"a password needs at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise InvalidInput(f"a password has at most {PASSWORD_MAX} characters")
    return password


def generate_password(length: int = 20) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


class Passwords:
    """argon2id hashing with the configured cost. `verify` also says whether the stored hash
    was made with other parameters, so the caller can store a fresh one (the password is only
    ever in hand at sign-in)."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int):
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        # Verified against when the email has no account, so that answer takes as long as a
        # wrong password and timing does not reveal which emails exist.
        self._decoy = self.hasher.hash(secrets.token_hex(16))

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> tuple[bool, bool]:
        """(matches, needs_rehash)."""
        if len(password) > PASSWORD_MAX:
            return False, False
        try:
            self.hasher.verify(stored_hash or self._decoy, password)
        except (VerificationError, InvalidHashError):
            return False, False
        if stored_hash is None:
            return False, False
        return True, self.hasher.check_needs_rehash(stored_hash)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def tokens_match(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True)
class ThrottlePolicy:
    """After `max_failures` failed sign-ins within `window_seconds` the subject (an email, or
    with `max_failures_per_address` a client address) is locked for `lockout_seconds`."""

    max_failures: int
    max_failures_per_address: int
    window_seconds: float
    lockout_seconds: float


def retry_after_seconds(locked_until: datetime, now: datetime) -> int:
    """Whole seconds to wait, at least 1 (a Retry-After of 0 invites an immediate retry)."""
    return max(1, math.ceil((locked_until - now).total_seconds()))
