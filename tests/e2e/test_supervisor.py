"""The dev stack's supervisor with real (tiny) processes: restart with backoff, stop, SIGKILL
for a child that ignores SIGTERM, and a clear failure when a child dies while starting."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from yggdrasil.devstack.supervisor import ProcessSpec, RestartPolicy, StartupFailed, Supervisor

pytestmark = pytest.mark.e2e

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
STUBBORN = [sys.executable, "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)"]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def wait_until(condition, timeout: float, supervisor: Supervisor | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor is not None:
            supervisor.poll_once()
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_restart_delay_doubles_from_one_second_to_thirty() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_killed_child_is_restarted_with_a_new_pid_and_reported(tmp_path: Path) -> None:
    seen: list[dict[str, int]] = []
    fast = RestartPolicy(initial_delay=0.1, max_delay=0.4, reset_after=60)
    supervisor = Supervisor(
        [ProcessSpec("a", SLEEPER, tmp_path / "a.log", restart=fast),
         ProcessSpec("b", SLEEPER, tmp_path / "b.log", restart=fast, stage=20)],
        on_change=lambda s: seen.append(s.pids()),
    )
    try:
        supervisor.start_all()
        first = supervisor.pids()
        assert set(first) == {"a", "b"}

        os.kill(first["a"], signal.SIGKILL)
        wait_until(lambda: supervisor.pids().get("a") not in (None, first["a"]), 5, supervisor)
        assert supervisor.child("a").restarts == 1
        assert supervisor.pids()["b"] == first["b"]
        assert {"b": first["b"]} in seen  # reported while "a" was down
        assert seen[-1] == supervisor.pids()

        # Dying again right away: the next delay doubles.
        second = supervisor.pids()["a"]
        os.kill(second, signal.SIGKILL)
        wait_until(lambda: supervisor.child("a").restart_at is not None, 5, supervisor)
        assert supervisor.child("a").failures == 2
        wait_until(lambda: supervisor.pids().get("a") not in (None, second), 5, supervisor)
    finally:
        supervisor.stop_all()
    assert supervisor.pids() == {}
    assert not alive(first["b"])


def test_stop_all_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    supervisor = Supervisor([ProcessSpec("stubborn", STUBBORN, tmp_path / "s.log", stop_timeout=0.5)])
    supervisor.start_all()
    pid = supervisor.pids()["stubborn"]
    wait_until(lambda: b"ready" in (tmp_path / "s.log").read_bytes(), 10)
    started = time.monotonic()
    supervisor.stop_all()
    assert time.monotonic() - started < 5
    assert not alive(pid)
    assert supervisor.child("stubborn").process.returncode == -signal.SIGKILL


def test_a_child_that_dies_while_starting_fails_the_start_with_its_log(tmp_path: Path) -> None:
    broken = [sys.executable, "-c", "import sys; print('cannot bind 127.0.0.1:1'); sys.exit(3)"]
    supervisor = Supervisor([ProcessSpec("broken", broken, tmp_path / "broken.log",
                                         health_url="http://127.0.0.1:9/health")])
    try:
        with pytest.raises(StartupFailed, match=r"(?s)broken exited with code 3.*cannot bind"):
            supervisor.start_all()
    finally:
        supervisor.stop_all()
