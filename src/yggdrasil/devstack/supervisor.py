"""A small process supervisor for the dev stack, in the spirit of a container restart policy.

The stack is a list of child specs. Each spec says how to start one process and how to tell
that it is ready; the supervisor starts them stage by stage (PostgreSQL before the broker,
the broker before the tenant servers, ...), restarts any that die with exponential backoff,
reports every new pid to a callback (which rewrites `stack.json`), and stops them in reverse
stage order. Adding a process to the demo is one more spec in the list:

    ProcessSpec("sidecar:acme", argv=[...], env={...}, log_file=logs / "sidecar-acme.log", stage=3)
    EmbeddedSpec("broker", EmbeddedNats(state_dir / "nats"), stage=1)

Two kinds of spec share one lifecycle:

- `ProcessSpec`: a command line. Started without waiting; ready when its health URL answers
  2xx (or at once, without one). Output goes to its log file. It gets its own session (a
  Ctrl-C in the terminal reaches only the supervisor, which stops children in order) and the
  parent-death signal, so it does not outlive a supervisor that was SIGKILLed.
- `EmbeddedSpec`: one of our embedded servers (`EmbeddedPostgres`, `EmbeddedNats`), whose
  `start()` launches the real binary and blocks until it accepts connections.

Everything here is synchronous and single-threaded: the supervisor polls its children a few
times a second, which is plenty for a dev stack and keeps signal handling simple.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2


class Shutdown(BaseException):
    """Raised by `SignalGuard` in the main thread when SIGINT/SIGTERM/SIGHUP arrives.

    A BaseException, so that no `except Exception` on the way up swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StartupFailed(Exception):
    """A child died or never became ready while the stack was starting."""


class SignalGuard:
    """Turns SIGINT/SIGTERM/SIGHUP into `Shutdown`, except inside `deferred()` blocks.

    Inside `deferred()` a signal is only remembered and raised when the block ends. We wrap
    every "fork a child and record its pid" step in it: an exception between the fork and the
    bookkeeping would leave a process nobody knows to stop.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._depth = 0
        self._pending: int | None = None
        self._previous: dict[int, object] = {}
        self.received: int | None = None

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def ignore(self) -> None:
        """While stopping: a second Ctrl-C must not interrupt the clean-up half way."""
        for sig in self.SIGNALS:
            signal.signal(sig, self._remember)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _remember(self, signum: int, frame: object) -> None:
        self.received = self.received or signum

    def _handle(self, signum: int, frame: object) -> None:
        self.received = self.received or signum
        if self._depth:
            self._pending = signum
            return
        raise Shutdown(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                signum, self._pending = self._pending, None
                raise Shutdown(signum)


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a dead child after `initial_delay`, doubling per consecutive failure up to
    `max_delay`; a child that stayed up `reset_after` seconds starts again from `initial_delay`."""

    initial_delay: float = 1.0
    max_delay: float = 30.0
    reset_after: float = 30.0
    enabled: bool = True

    def delay(self, consecutive_failures: int) -> float:
        return min(self.initial_delay * 2 ** max(consecutive_failures - 1, 0), self.max_delay)


class Launchable(Protocol):
    name: str
    stage: int
    restart: RestartPolicy
    stop_signal: int
    stop_timeout: float
    start_timeout: float

    def launch(self) -> subprocess.Popen[bytes]: ...

    def is_ready(self) -> bool: ...

    def describe_failure(self) -> str: ...


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for a child that must not outlive its parent (the supervisor), even a
    SIGKILLed one. Runs in the forked child before exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def log_tail(path: Path, chars: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - chars, 0))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessSpec:
    """A command line to run and keep running."""

    name: str
    argv: Sequence[str]
    log_file: Path
    env: Mapping[str, str] = field(default_factory=dict)
    health_url: str | None = None
    cwd: Path | None = None
    stage: int = 10
    restart: RestartPolicy = RestartPolicy()
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    start_timeout: float = 60.0

    def launch(self) -> subprocess.Popen[bytes]:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            out.flush()
            return subprocess.Popen(
                list(self.argv), env={**os.environ, **self.env}, cwd=self.cwd,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )

    def is_ready(self) -> bool:
        if self.health_url is None:
            return True
        try:
            with urllib.request.urlopen(self.health_url, timeout=1.0) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def describe_failure(self) -> str:
        return f"last lines of {self.log_file}:\n{log_tail(self.log_file)}"


class EmbeddedServer(Protocol):
    process: subprocess.Popen[bytes] | None

    def start(self, timeout: float = ...) -> None: ...


@dataclass(frozen=True)
class EmbeddedSpec:
    """One of our embedded servers (EmbeddedPostgres, EmbeddedNats): `start()` launches the
    binary and returns once it accepts connections, so it is ready as soon as it is launched."""

    name: str
    server: EmbeddedServer
    log_file: Path | None = None
    stage: int = 0
    restart: RestartPolicy = RestartPolicy()
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0
    start_timeout: float = 60.0

    def launch(self) -> subprocess.Popen[bytes]:
        try:
            self.server.start(timeout=self.start_timeout)
        except BaseException:
            # A start that failed half way (e.g. timed out) must not leave the binary running.
            process = self.server.process
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
            raise
        assert self.server.process is not None
        return self.server.process

    def is_ready(self) -> bool:
        return True

    def describe_failure(self) -> str:
        return f"last lines of {self.log_file}:\n{log_tail(self.log_file)}" if self.log_file else ""


@dataclass
class Child:
    """A spec and the supervisor's bookkeeping for it."""

    spec: Launchable
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready: bool = False
    failures: int = 0  # consecutive short-lived runs
    restarts: int = 0
    restart_at: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None


class Supervisor:
    """Starts children stage by stage, keeps them running, stops them in reverse order.

    `on_change(supervisor)` is called after every start, restart and death, so the caller can
    publish the current pids (the demo rewrites stack.json).
    """

    def __init__(
        self,
        specs: Sequence[Launchable],
        guard: SignalGuard | None = None,
        on_change: Callable[[Supervisor], None] | None = None,
    ):
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.children = [Child(spec) for spec in specs]
        self.guard = guard or SignalGuard()
        self.on_change = on_change

    def child(self, name: str) -> Child:
        for c in self.children:
            if c.name == name:
                return c
        raise KeyError(name)

    def pids(self) -> dict[str, int]:
        """Name → pid of every child that is running now."""
        return {c.name: c.pid for c in self.children if c.pid is not None}

    def add(self, spec: Launchable) -> Child:
        """Add a child to a stack that may already be running; `start_all` or `run` starts it."""
        if any(c.name == spec.name for c in self.children):
            raise ValueError(f"a child named {spec.name!r} already exists")
        child = Child(spec)
        self.children.append(child)
        return child

    def _stages(self) -> list[int]:
        return sorted({c.spec.stage for c in self.children})

    # -- starting ------------------------------------------------------------------------------

    def _launch(self, child: Child) -> None:
        # Deferred: a Ctrl-C between fork and this assignment would leak an unrecorded process.
        with self.guard.deferred():
            child.process = child.spec.launch()
            child.started_at = time.monotonic()
            child.ready = False
            child.restart_at = None
        log.info("started %s (pid %s)", child.name, child.process.pid)

    def start_all(self) -> None:
        """Start every child not yet running, stage by stage; within a stage all start at once
        and the next stage begins when all are ready. Raises StartupFailed if one dies or is
        not ready within its start timeout."""
        for stage in self._stages():
            batch = [c for c in self.children if c.spec.stage == stage and c.pid is None]
            for child in batch:
                try:
                    self._launch(child)
                except Exception as exc:
                    raise StartupFailed(
                        f"{child.name} failed to start: {exc}\n{child.spec.describe_failure()}"
                    ) from exc
            self._notify()
            self._wait_ready(batch)

    def _wait_ready(self, batch: list[Child]) -> None:
        pending = list(batch)
        while pending:
            for child in list(pending):
                assert child.process is not None
                code = child.process.poll()
                if code is not None:
                    raise StartupFailed(
                        f"{child.name} exited with code {code} while starting\n{child.spec.describe_failure()}"
                    )
                if child.spec.is_ready():
                    child.ready = True
                    pending.remove(child)
                    log.info("%s is ready", child.name)
                elif time.monotonic() - child.started_at > child.spec.start_timeout:
                    raise StartupFailed(
                        f"{child.name} was not ready within {child.spec.start_timeout:.0f}s\n"
                        f"{child.spec.describe_failure()}"
                    )
            if pending:
                time.sleep(POLL_INTERVAL)

    # -- supervising ---------------------------------------------------------------------------

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        """Supervise until `until()` is true or a signal raises Shutdown."""
        while not until():
            self.poll_once()
            time.sleep(POLL_INTERVAL)

    def poll_once(self) -> None:
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is not None and child.restart_at is None:
                code = process.poll()
                if code is None:
                    if not child.ready and child.spec.is_ready():
                        child.ready = True
                        log.info("%s is ready again (pid %s)", child.name, process.pid)
                    continue
                self._schedule_restart(child, code, now)
            elif child.restart_at is not None and now >= child.restart_at:
                try:
                    self._launch(child)
                except Exception as exc:
                    log.error("could not restart %s: %s", child.name, exc)
                    child.process = None
                    self._schedule_restart(child, None, time.monotonic())
                    continue
                child.restarts += 1
                self._notify()

    def _schedule_restart(self, child: Child, code: int | None, now: float) -> None:
        policy = child.spec.restart
        if code is not None:
            uptime = now - child.started_at
            if uptime >= policy.reset_after:
                child.failures = 0
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            pid = child.process.pid if child.process else "?"
            log.warning("%s (pid %s) %s after %.1fs", child.name, pid, how, uptime)
        child.ready = False
        if not policy.enabled:
            child.restart_at = None
            child.process = None
            self._notify()
            return
        child.failures += 1
        delay = policy.delay(child.failures)
        child.restart_at = now + delay
        log.warning("restarting %s in %.0fs (restart #%d)", child.name, delay, child.restarts + 1)
        self._notify()

    def _notify(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:
                log.exception("on_change callback failed")

    # -- stopping ------------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Stop every child, last stage first; within a stage, all at once. Each gets its stop
        signal, then SIGKILL after its stop timeout. Returns when every child has exited."""
        for stage in reversed(self._stages()):
            batch = [c for c in self.children if c.spec.stage == stage]
            for child in batch:
                child.restart_at = None
                if child.process is not None and child.process.poll() is None:
                    log.info("stopping %s (pid %s)", child.name, child.process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        child.process.send_signal(child.spec.stop_signal)
            for child in batch:
                if child.process is None:
                    continue
                try:
                    child.process.wait(child.spec.stop_timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop within %.0fs; killing it", child.name, child.spec.stop_timeout)
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
                    child.process.wait()
        self._notify()
