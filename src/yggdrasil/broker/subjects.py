"""Subject names for federated events. Every subject is built and parsed here, never inline.

`ygg.events.<module>.<dest_tenant>.<source_tenant>`: the destination comes before the source so
that a tenant's consumer filters on one token (`ygg.events.sales.bravo.*`), and its publish
permission pins the last token to itself (`ygg.events.*.*.acme`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EVENTS_PREFIX = "ygg.events"
MODULES = ("sales", "purchasing", "b2b")
TENANT_ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,62}$")


class InvalidSubject(ValueError):
    """A subject, module or tenant id that cannot name a federated event."""


def validate_tenant_id(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_ID_PATTERN.fullmatch(tenant):
        raise InvalidSubject(f"invalid tenant id {tenant!r}: expected {TENANT_ID_PATTERN.pattern}")
    return tenant


def validate_module(module: str) -> str:
    if module not in MODULES:
        raise InvalidSubject(f"unknown module {module!r}: expected one of {', '.join(MODULES)}")
    return module


@dataclass(frozen=True)
class EventSubject:
    module: str
    destination: str
    source: str

    def __str__(self) -> str:
        return event_subject(self.module, self.destination, self.source)


def event_subject(module: str, dest_tenant: str, source_tenant: str) -> str:
    validate_module(module)
    validate_tenant_id(dest_tenant)
    validate_tenant_id(source_tenant)
    return f"{EVENTS_PREFIX}.{module}.{dest_tenant}.{source_tenant}"


def parse_event_subject(subject: str) -> EventSubject:
    """Split an event subject into its parts; raises InvalidSubject for anything else."""
    parts = subject.split(".")
    if len(parts) != 5 or ".".join(parts[:2]) != EVENTS_PREFIX:
        raise InvalidSubject(f"not an event subject: {subject!r}")
    _, _, module, destination, source = parts
    return EventSubject(validate_module(module), validate_tenant_id(destination), validate_tenant_id(source))


def module_subjects(module: str) -> str:
    """Everything a module's stream captures."""
    return f"{EVENTS_PREFIX}.{validate_module(module)}.>"


def inbound_filter(module: str, tenant: str) -> str:
    """Events of `module` addressed to `tenant`, from any source."""
    return f"{EVENTS_PREFIX}.{validate_module(module)}.{validate_tenant_id(tenant)}.*"


def outbound_pattern(tenant: str) -> str:
    """Every subject `tenant` may publish to: any module, any destination, itself as source."""
    return f"{EVENTS_PREFIX}.*.*.{validate_tenant_id(tenant)}"
