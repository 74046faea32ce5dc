"""Writing a file so that readers (a reloading broker, a script polling stack.json, a restore
reading a manifest) see the old content or the new, never half of one, and a crash keeps one
of the two."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def replace_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, rename it over `path`, fsync
    the folder. `mode` (0600 by default: these files hold tokens and passwords) is masked by the
    umask like any new file's."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    # A rename is durable only once the folder's entry is on disk too.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
