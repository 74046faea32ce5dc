"""Per-tenant broker credentials: a tenant publishes only as itself and reads only its own mail.

The broker enforces this, not the tenants' good behaviour: a tenant that publishes with another
tenant as source is refused by nats-server (and, should it get through, fails the signature
check at the destination). Consumption is confined the same way: since nats-server 2.10 the
consumer-create subject carries the filter, `$JS.API.CONSUMER.CREATE.<stream>.<durable>.<filter>`,
so permitting exactly that subject pins the tenant's durable consumer to events addressed to it.
The legacy `$JS.API.CONSUMER.DURABLE.CREATE...` subject, which carries no filter, is not allowed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from yggdrasil.broker.streams import durable_name, stream_name
from yggdrasil.broker.subjects import MODULES, inbound_filter, outbound_pattern, validate_tenant_id

ACCOUNT = "YGG"
# Underscores cannot occur in tenant ids, so the admin can never collide with a tenant.
ADMIN_USER = "ygg_admin"


def inbox_prefix(tenant: str) -> str:
    """Pass as `nats.connect(inbox_prefix=...)`: replies reach a tenant only under its own
    prefix, so it needs no permission on the shared `_INBOX.>`, where it could read others'."""
    return f"_INBOX.{validate_tenant_id(tenant)}"


def tenant_permissions(tenant: str, modules: Iterable[str] = MODULES) -> dict[str, dict[str, list[str]]]:
    publish = [outbound_pattern(tenant)]
    subscribe = [f"{inbox_prefix(tenant)}.>"]
    for module in modules:
        stream, durable = stream_name(module), durable_name(tenant, module)
        own_filter = inbound_filter(module, tenant)
        publish += [
            # The filter's trailing `*` acts as a wildcard here too: it still matches only
            # filters for events addressed to this tenant.
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.{own_filter}",
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",  # ack, nak, term, in-progress
        ]
        subscribe.append(own_filter)
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def render_auth_config(
    tenant_passwords: Mapping[str, str],
    *,
    admin_password: str,
    admin_user: str = ADMIN_USER,
    account: str = ACCOUNT,
) -> str:
    """An nats-server `accounts` block: one JetStream-enabled account holding an unrestricted
    admin user (for `ygg broker` and the dev stack) and one restricted user per tenant, whose
    user name is the tenant id. Passwords may be plain or bcrypt hashes (`$2a$...`).

    The nats-server config syntax accepts JSON values, so the block is rendered with `json`,
    which also quotes the `$JS...` subjects (unquoted, `$` would start a variable reference).
    """
    users: list[dict[str, object]] = [{"user": admin_user, "password": admin_password}]
    for tenant, password in sorted(tenant_passwords.items()):
        users.append({"user": validate_tenant_id(tenant), "password": password,
                      "permissions": tenant_permissions(tenant)})
    accounts = {account: {"jetstream": "enabled", "users": users}}
    return "accounts: " + json.dumps(accounts, indent=2) + "\n"
