"""`ygg demo`: the whole system on 127.0.0.1 with embedded PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    state_dir: Path = typer.Option(Path(".state/demo"), "--state-dir", help="where databases, logs and stack.json live"),
) -> None:
    """Start the whole system on 127.0.0.1, seed sample data, write STATE_DIR/stack.json,
    supervise every process, and stop everything on Ctrl-C or SIGTERM."""
    from yggdrasil.devstack.demo import run_demo

    raise typer.Exit(run_demo(state_dir))
