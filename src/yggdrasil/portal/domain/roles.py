"""Roles in an organization and what each may do, declared as data.

member: read the organization, open and comment on tickets.
admin:  also manage members (not owners) and tickets (assign, close, reopen), rename.
owner:  also manage the subscription, owners, and delete the organization.
"""

from __future__ import annotations

from yggdrasil.portal.errors import Conflict, Forbidden, InvalidInput

ROLES = ("member", "admin", "owner")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

# action -> the least role allowed to do it
PERMISSIONS: dict[str, str] = {
    "organization.read": "member",
    "ticket.open": "member",
    "ticket.comment": "member",
    "organization.rename": "admin",
    "member.manage": "admin",
    "ticket.manage": "admin",
    "subscription.manage": "owner",
    "owner.manage": "owner",
    "organization.delete": "owner",
}

_WHAT = {
    "organization.read": "read this organization",
    "ticket.open": "open tickets",
    "ticket.comment": "comment on tickets",
    "organization.rename": "rename the organization",
    "member.manage": "manage members",
    "ticket.manage": "assign, close or reopen tickets",
    "subscription.manage": "change the subscription",
    "owner.manage": "add, change or remove owners",
    "organization.delete": "delete the organization",
}


def check_role(role: str) -> str:
    if role not in _RANK:
        raise InvalidInput(f"unknown role {role!r}; roles are: {', '.join(ROLES)}")
    return role


def allows(role: str, action: str) -> bool:
    return _RANK[role] >= _RANK[PERMISSIONS[action]]


def require(role: str, action: str) -> None:
    """Raise Forbidden (with what is needed) unless `role` may do `action`."""
    if not allows(role, action):
        needed = PERMISSIONS[action]
        raise Forbidden(f"only an {needed} can {_WHAT[action]}; your role is {role}"
                        if needed in ("admin", "owner") else f"your role ({role}) cannot {_WHAT[action]}")


def require_can_set_role(actor_role: str, target_old_role: str | None, target_new_role: str | None) -> None:
    """May `actor_role` move someone from `target_old_role` to `target_new_role`?
    None means "not a member" (an invitation from None, a removal to None)."""
    require(actor_role, "member.manage")
    if "owner" in (target_old_role, target_new_role):
        require(actor_role, "owner.manage")


def require_an_owner_remains(owners_left: int) -> None:
    if owners_left < 1:
        raise Conflict("an organization needs at least one owner; make someone else owner first",
                       code="membership.last_owner")
