"""What the sidecar is doing, as plain data: logged on every change of state, and readable by
whoever runs the sidecar in-process (tests, the dev stack's live view)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("yggdrasil.federation")


@dataclass
class LoopStatus:
    name: str
    # starting | running | idle | backing_off | broker_unreachable | database_unavailable | stopped
    state: str = "starting"
    last_error: str | None = None
    since: datetime = field(default_factory=lambda: datetime.now(UTC))

    def move(self, state: str, error: str | None = None) -> None:
        """Record a state; logs only changes, so a loop that keeps failing logs once per cause."""
        # The last error is kept for the status after recovery; it is not a new change.
        if state == self.state and (error is None or error == self.last_error):
            return
        level = logging.WARNING if error else logging.INFO
        log.log(level, "%s: %s%s", self.name, state, f" ({error})" if error else "",
                extra={"loop": self.name, "state": state})
        self.state, self.since = state, datetime.now(UTC)
        if error is not None:
            self.last_error = error


@dataclass
class PublisherStatus(LoopStatus):
    name: str = "publisher"
    pending: int | None = None
    published_total: int = 0
    last_published_at: datetime | None = None
    # Published order events still waiting for the destination's receipt, and how many of
    # those are past their receipt timeout (sent again, or waiting for the destination to
    # read up to them: see publisher.py). Updated at each receipt check.
    awaiting_receipt: int | None = None
    receipt_overdue: int | None = None
    # Events sent again because no receipt came within the timeout, since the sidecar started.
    resent_total: int = 0
    last_resent_at: datetime | None = None


@dataclass
class RelayStatus(LoopStatus):
    name: str = "relay"
    # applied, duplicate, held, awaiting_approval, rejected, quarantined
    outcomes: Counter[str] = field(default_factory=Counter)
    # Modules whose consumer has drained its backlog since the broker connection began: until
    # `b2b` has, receipts may still wait in the stream, and none is overdue yet.
    caught_up: set[str] = field(default_factory=set)


@dataclass
class RegistrySyncStatus(LoopStatus):
    """The partner registry sync (federation/registry_sync.py); the same facts are kept in the
    tenant database's `b2b_registry_sync` row."""

    # starting | synced | mesh_unreachable | mesh_error | database_unavailable | stopped | off
    name: str = "registry"
    etag: str | None = None
    partners: int | None = None
    last_success_at: datetime | None = None
    consecutive_failures: int = 0
    # Seconds until the next attempt: the interval, or the backoff delay while failing.
    retry_delay: float | None = None
    changed_total: int = 0
    not_modified_total: int = 0


@dataclass
class SidecarStatus:
    broker: LoopStatus = field(default_factory=lambda: LoopStatus("broker"))
    publisher: PublisherStatus = field(default_factory=PublisherStatus)
    relay: RelayStatus = field(default_factory=RelayStatus)
    registry: RegistrySyncStatus = field(default_factory=RegistrySyncStatus)

    def snapshot(self) -> dict[str, Any]:
        return {"broker": asdict(self.broker), "publisher": asdict(self.publisher),
                "relay": {**asdict(self.relay), "outcomes": dict(self.relay.outcomes),
                          "caught_up": sorted(self.relay.caught_up)},
                "registry": asdict(self.registry)}
