"""Stream and consumer settings as data, so that `ygg` can create them and check a running broker.

One JetStream stream per module captures `ygg.events.<module>.>`; each tenant reads its events
through one durable pull consumer per module, filtered to the events addressed to it. The
consumer's ack floor is the tenant's committed offset: it survives restarts of both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    ReplayPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from yggdrasil.settings import Settings

from yggdrasil.broker.subjects import (
    MODULES,
    TENANT_ID_PATTERN,
    inbound_filter,
    module_subjects,
    validate_tenant_id,
)

DAY = 24 * 3600.0
DEFAULT_MAX_AGE = 7 * DAY
# The server's default de-duplication window is 2 minutes: a producer that retries after a
# longer broker or network outage would store the event twice. A day covers any outage the
# sidecar is expected to ride out with its backoff. Its cost is broker memory for the message ids
# seen within the window. It is an optimisation, not the guarantee: the destination's inbox
# (event id unique, never expiring) is the final guard against a second effect.
DEFAULT_DUPLICATE_WINDOW = DAY
DEFAULT_ACK_WAIT = 30.0
# Unlimited: a database outage at the destination must never exhaust an event's deliveries,
# because the consumer would then skip it for good. Permanently bad events are quarantined by
# the relay and terminated (`msg.term()`), which ends redelivery explicitly.
DEFAULT_MAX_DELIVER = -1
DEFAULT_MAX_ACK_PENDING = 1000

STREAM_CHECKED_FIELDS = (
    "subjects", "retention", "storage", "discard", "max_age", "duplicate_window",
    "num_replicas", "max_msgs", "max_bytes",
)
CONSUMER_CHECKED_FIELDS = (
    "filter_subject", "ack_policy", "deliver_policy", "replay_policy",
    "ack_wait", "max_deliver", "max_ack_pending",
)


def stream_name(module: str) -> str:
    return f"YGG_{module.upper()}"


def stream_config(
    module: str,
    *,
    max_age: float = DEFAULT_MAX_AGE,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
    replicas: int = 1,
) -> StreamConfig:
    """The declared stream for `module`. Durations are in seconds; `max_age` 0 keeps forever."""
    if max_age > 0:
        # The server refuses a de-duplication window longer than the retention.
        duplicate_window = min(duplicate_window, max_age)
    return StreamConfig(
        name=stream_name(module),
        description=f"Yggdrasil {module} events between tenants",
        subjects=[module_subjects(module)],
        # Limits retention: every destination has its own consumer; messages age out by max_age
        # only, whoever has read them. Past retention, gaps are filled from the source's outbox.
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        duplicate_window=duplicate_window,
        num_replicas=replicas,
        max_msgs=-1,
        max_bytes=-1,
        # No per-stream message size limit below the server's max_payload: an oversized event
        # must reach the destination, to be quarantined there with its reason.
    )


def declared_streams(
    *,
    max_age: float = DEFAULT_MAX_AGE,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
    replicas: int = 1,
) -> list[StreamConfig]:
    return [
        stream_config(module, max_age=max_age, duplicate_window=duplicate_window, replicas=replicas)
        for module in MODULES
    ]


def declared_streams_for(settings: Settings) -> list[StreamConfig]:
    """The stream declaration as this deployment configures it. Everything that creates or
    checks streams uses it, so a configured retention is never reset to the default."""
    return declared_streams(
        max_age=settings.broker_stream_max_age_seconds,
        duplicate_window=settings.broker_duplicate_window_seconds,
        replicas=settings.broker_stream_replicas,
    )


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    config: ConsumerConfig

    @property
    def durable(self) -> str:
        assert self.config.durable_name
        return self.config.durable_name


def durable_name(tenant: str, module: str) -> str:
    return f"ygg-{validate_tenant_id(tenant)}-{module}"


def durable_tenant(durable: str, module: str) -> str | None:
    """The tenant whose `module` consumer is named `durable`, or None if the name is not one
    of ours (the inverse of `durable_name`)."""
    prefix, suffix = "ygg-", f"-{module}"
    if not (durable.startswith(prefix) and durable.endswith(suffix)):
        return None
    tenant = durable[len(prefix):-len(suffix)]
    return tenant if TENANT_ID_PATTERN.fullmatch(tenant) else None


def consumer_spec(
    tenant: str,
    module: str,
    *,
    ack_wait: float = DEFAULT_ACK_WAIT,
    max_deliver: int = DEFAULT_MAX_DELIVER,
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
) -> ConsumerSpec:
    """The durable pull consumer through which `tenant` reads `module` events addressed to it."""
    durable = durable_name(tenant, module)
    return ConsumerSpec(
        stream=stream_name(module),
        config=ConsumerConfig(
            # `name` as well as `durable_name`: then nats-py creates it through
            # `$JS.API.CONSUMER.CREATE.<stream>.<durable>.<filter>`, the subject that the
            # tenant's permissions pin to its own filter (see broker/permissions.py).
            name=durable,
            durable_name=durable,
            filter_subject=inbound_filter(module, tenant),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            replay_policy=ReplayPolicy.INSTANT,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
        ),
    )


def declared_consumers(
    tenants: Iterable[str],
    *,
    ack_wait: float = DEFAULT_ACK_WAIT,
    max_deliver: int = DEFAULT_MAX_DELIVER,
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
) -> list[ConsumerSpec]:
    """One consumer per tenant and module."""
    return [
        consumer_spec(tenant, module, ack_wait=ack_wait, max_deliver=max_deliver, max_ack_pending=max_ack_pending)
        for tenant in tenants
        for module in MODULES
    ]


@dataclass(frozen=True)
class Drift:
    """One difference between the declared and the running broker. `field` is `exists` when
    the stream or consumer is missing."""

    kind: str  # "stream" | "consumer"
    name: str
    field: str
    expected: object
    actual: object

    def __str__(self) -> str:
        if self.field == "exists":
            return f"{self.kind} {self.name}: {'missing' if self.expected else 'not declared'}"
        return f"{self.kind} {self.name}: {self.field} is {self.actual!r}, declared {self.expected!r}"


def _normalise(field: str, value: object) -> object:
    if field == "subjects" and value is not None:
        return sorted(value)  # type: ignore[call-overload]
    # nats-py returns enums as plain strings; the declared side holds str-enums.
    return value.value if hasattr(value, "value") else value


def _compare(kind: str, name: str, fields: Sequence[str], declared: object, running: object) -> list[Drift]:
    drifts = []
    for field in fields:
        expected = _normalise(field, getattr(declared, field))
        actual = _normalise(field, getattr(running, field))
        if expected is not None and expected != actual:
            drifts.append(Drift(kind, name, field, expected, actual))
    return drifts


async def ensure_streams(js: JetStreamContext, streams: Sequence[StreamConfig] | None = None) -> None:
    """Create the declared streams that are missing and update those that drifted.

    Raises nats.js.errors.APIError if the server refuses a change (storage type, for one,
    cannot be changed on a live stream).
    """
    for config in streams if streams is not None else declared_streams():
        assert config.name
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            continue
        if _compare("stream", config.name, STREAM_CHECKED_FIELDS, config, info.config):
            await js.update_stream(config)


async def ensure_consumers(js: JetStreamContext, consumers: Iterable[ConsumerSpec]) -> None:
    """Create or update each durable consumer (the server's create is create-or-update)."""
    for spec in consumers:
        await js.add_consumer(spec.stream, config=spec.config)


async def check_streams(
    js: JetStreamContext,
    streams: Sequence[StreamConfig] | None = None,
    consumers: Iterable[ConsumerSpec] = (),
) -> list[Drift]:
    """Compare the running broker with the declaration; an empty list means no drift."""
    drifts: list[Drift] = []
    for config in streams if streams is not None else declared_streams():
        assert config.name
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            drifts.append(Drift("stream", config.name, "exists", True, False))
            continue
        drifts += _compare("stream", config.name, STREAM_CHECKED_FIELDS, config, info.config)
    for spec in consumers:
        name = f"{spec.stream}/{spec.durable}"
        try:
            cinfo = await js.consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            drifts.append(Drift("consumer", name, "exists", True, False))
            continue
        drifts += _compare("consumer", name, CONSUMER_CHECKED_FIELDS, spec.config, cinfo.config)
    return drifts
