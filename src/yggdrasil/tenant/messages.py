"""User-facing text, looked up by id. The same ids appear in API error bodies and logs."""

MESSAGES: dict[str, str] = {
    "resource.not_found": "{resource} {id} does not exist",
    "resource.stale_version": (
        "{resource} {id} was changed by someone else (you sent version {sent}, it is now at "
        "version {current}); reload it and try again"
    ),
    "resource.conflict": "{detail}",
    "resource.reference_unknown": "{field} {id} does not exist",
    "resource.reference_inactive": "{field} {id} is inactive",
    "order.invalid_transition": "{resource} {id} is {state} and cannot be {action}",
    "order.no_lines": "an order needs at least one line",
    "order.line_invalid": "line {line_no}: {problem}",
    "order.not_editable": "{resource} {id} is {state}; only draft orders can be edited",
    "stock.insufficient": (
        "not enough stock of item {item_id} in warehouse {warehouse_id}: need {needed}, have {available}"
    ),
    "auth.missing_token": "an Authorization: Bearer <token> header is required",
    "auth.invalid_token": "the bearer token is unknown, revoked or expired",
    "auth.forbidden": "role {role} may not {action}; it needs one of: {allowed}",
    "request.too_large": "request body is larger than {limit} bytes",
    "request.invalid": "the request is invalid",
    "request.rate_limited": "too many requests for this token; retry in {retry_after} s",
    "database.unavailable": "the tenant database is unreachable; writes are refused until it is back",
    "federation.not_configured": (
        "this order concerns partner tenant {partner}, but the server has no signing key to send "
        "it with (set YGG_SIGNING_KEY_PATH; `ygg keys generate` makes one); nothing was saved"
    ),
    "federation.module_not_agreed": (
        "this order concerns partner tenant {partner}, but the partnership covers {modules}, not {module} "
        "(the mesh's partnership decides; the partner would refuse the event); nothing was saved"
    ),
    "database.rejected": "the database refused the value: {detail}",
    "report.invalid_period": "the period is empty: from {start} is after to {end}",
    "partner.exists": "partner {tenant_id} is already registered; change it with PATCH /api/v1/partners/{tenant_id}",
    "partner.is_self": "{tenant_id} is this tenant; a tenant cannot be its own partner",
    "approval.already_decided": "approval {id} is already {state}; a decision is final",
    "approval.blocked": (
        "approval {id} cannot be applied as the document stands ({reason}: {detail}); "
        "fix that (an unmapped SKU: POST /api/v1/partners/{partner}/items) and approve again, or reject it"
    ),
    "approval.partner_unavailable": "approval {id} cannot be applied: {detail}",
    "approval.forbidden": "role {role} may not decide approval {id} (a {kind}); it needs one of: {allowed}",
}


def message(message_id: str, **params: object) -> str:
    return MESSAGES[message_id].format(**params)
