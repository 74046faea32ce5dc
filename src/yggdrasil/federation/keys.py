"""This tenant's Ed25519 signing key, kept in a file readable by the sidecar only.

The file holds the base64 of the 32 raw private-key bytes and a newline; the public key is
derived from it, and is what partners record (`ygg partner add --public-key`).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yggdrasil.events.signing import decode_private_key, encode_private_key


class SigningKeyError(Exception):
    """The key file is missing, unreadable or does not hold an Ed25519 private key."""


def write_signing_key(path: Path, key: Ed25519PrivateKey, *, overwrite: bool = False) -> None:
    """Create `path` with mode 0600. Refuses to replace an existing key unless `overwrite`:
    a replaced key cannot be recovered, and partners would refuse our events until they
    record the new public key."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path} exists; refusing to replace a signing key") from None
    with os.fdopen(fd, "w") as out:
        out.write(encode_private_key(key) + "\n")
    os.chmod(path, 0o600)


def load_signing_key(path: Path | None) -> Ed25519PrivateKey:
    if path is None:
        raise SigningKeyError("no signing key configured (set YGG_SIGNING_KEY_PATH; `ygg keys generate` makes one)")
    try:
        text = Path(path).read_text().strip()
    except OSError as error:
        raise SigningKeyError(f"cannot read signing key {path}: {error.strerror}") from None
    try:
        return decode_private_key(text)
    except ValueError as error:
        raise SigningKeyError(f"{path} does not hold an Ed25519 private key: {error}") from None
