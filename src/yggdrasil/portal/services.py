"""The portal's use cases, one function each, over one connection (autocommit; each function
opens the transactions it needs). Web pages, the JSON API and the CLI all come through here, so
a rule holds for all three.

Every function that starts from a signed-in user finds the organization through that user's
membership (`membership`): another organization's slug, ticket or member is NotFound, exactly
as if it did not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from psycopg import AsyncConnection
from psycopg import errors as pg_errors

from yggdrasil.portal.adapters import accounts as account_rows
from yggdrasil.portal.adapters import organizations as org_rows
from yggdrasil.portal.adapters import subscriptions as subscription_rows
from yggdrasil.portal.adapters import tickets as ticket_rows
from yggdrasil.portal.domain import accounts, organizations, roles, subscriptions, tickets
from yggdrasil.portal.domain.plans import PLANS
from yggdrasil.portal.errors import Conflict, InvalidInput, LoginFailed, LoginThrottled, NotFound

ORGANIZATION_NOT_FOUND = "organization not found"
TICKET_NOT_FOUND = "ticket not found"
MEMBER_NOT_FOUND = "member not found"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Actor:
    """The signed-in user making a request."""

    user_id: int
    email: str
    display_name: str
    session_id: int | None = None


@dataclass(frozen=True)
class Membership:
    """The caller's standing in one organization."""

    organization: dict
    role: str

    @property
    def organization_id(self) -> int:
        return self.organization["id"]


@dataclass(frozen=True)
class Session:
    actor: Actor
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class SignedIn:
    token: str
    session: Session


# -- users -----------------------------------------------------------------------------------

async def create_user(conn: AsyncConnection, passwords: accounts.Passwords, email: str, display_name: str,
                      password: str) -> dict:
    email = accounts.check_email(email)
    display_name = accounts.check_display_name(display_name)
    password_hash = await asyncio.to_thread(passwords.hash, accounts.check_new_password(password))
    try:
        async with conn.transaction():
            user = await account_rows.insert_user(conn, email, display_name, password_hash)
            await org_rows.record_event(conn, None, user["id"], "user.created")
    except pg_errors.UniqueViolation:
        raise Conflict(f"a user with the email {email!r} exists already", code="user.exists") from None
    return user


async def update_profile(conn: AsyncConnection, actor: Actor, display_name: str) -> dict:
    display_name = accounts.check_display_name(display_name)
    return await account_rows.set_display_name(conn, actor.user_id, display_name)


async def change_password(conn: AsyncConnection, passwords: accounts.Passwords, actor: Actor,
                          current_password: str, new_password: str) -> None:
    """Other sessions of the user are signed out: a changed password is often a reaction to
    someone else having it."""
    accounts.check_new_password(new_password)
    user = await account_rows.user_by_id(conn, actor.user_id)
    matches, _ = await asyncio.to_thread(passwords.verify, user["password_hash"], current_password)
    if not matches:
        raise InvalidInput("the current password is wrong", code="auth.password_wrong")
    new_hash = await asyncio.to_thread(passwords.hash, new_password)
    async with conn.transaction():
        await account_rows.set_password_hash(conn, actor.user_id, new_hash)
        await account_rows.revoke_sessions_of_user(conn, actor.user_id, keep_session_id=actor.session_id)
        await org_rows.record_event(conn, None, actor.user_id, "user.password_changed")


# -- sessions --------------------------------------------------------------------------------

def _throttle_subjects(email: str, client_address: str) -> tuple[str, str]:
    # The email is stored hashed: the table then holds no addresses that were only ever typed
    # by someone guessing, and a subject's length is bounded whatever is sent.
    email_digest = hashlib.sha256(accounts.email_key(email).encode()).hexdigest()
    return f"email:{email_digest}", f"address:{client_address[:100]}"


async def sign_in(conn: AsyncConnection, passwords: accounts.Passwords, policy: accounts.ThrottlePolicy,
                  email: str, password: str, client_address: str, user_agent: str,
                  session_max_age_seconds: float) -> SignedIn:
    """Check the password and open a session. Raises LoginThrottled while the email or the
    client address is locked (even for the right password), LoginFailed otherwise; neither
    says whether the email has an account."""
    email_subject, address_subject = _throttle_subjects(email, client_address)
    lock = await account_rows.lock_on(conn, [email_subject, address_subject])
    if lock is not None:
        raise LoginThrottled(accounts.retry_after_seconds(*lock))
    user = await account_rows.user_by_email(conn, accounts.email_key(email))
    matches, needs_rehash = await asyncio.to_thread(passwords.verify, user and user["password_hash"], password)
    if not matches or not user["active"]:
        async with conn.transaction():
            locks = [
                await account_rows.record_failure(conn, email_subject, policy.max_failures,
                                                  policy.window_seconds, policy.lockout_seconds),
                await account_rows.record_failure(conn, address_subject, policy.max_failures_per_address,
                                                  policy.window_seconds, policy.lockout_seconds),
            ]
        retry = [accounts.retry_after_seconds(*lock) for lock in locks if lock is not None]
        if retry:
            raise LoginThrottled(max(retry))
        raise LoginFailed("the email or password is wrong")
    new_hash = await asyncio.to_thread(passwords.hash, password) if needs_rehash else None
    token, csrf_token = accounts.new_token(), accounts.new_token()
    async with conn.transaction():
        await account_rows.clear_failures(conn, email_subject)
        if new_hash is not None:
            await account_rows.set_password_hash(conn, user["id"], new_hash)
        row = await account_rows.insert_session(conn, accounts.hash_token(token), csrf_token, user["id"],
                                                client_address, user_agent, session_max_age_seconds)
        await org_rows.record_event(conn, None, user["id"], "user.signed_in", rehashed=new_hash is not None)
    actor = Actor(user["id"], user["email"], user["display_name"], row["id"])
    return SignedIn(token, Session(actor, csrf_token, row["expires_at"]))


async def session_for_token(conn: AsyncConnection, token: str, idle_seconds: float) -> Session | None:
    row = await account_rows.live_session(conn, accounts.hash_token(token), idle_seconds)
    if row is None:
        return None
    actor = Actor(row["id"], row["email"], row["display_name"], row["session_id"])
    return Session(actor, row["csrf_token"], row["expires_at"])


async def sign_out(conn: AsyncConnection, actor: Actor) -> None:
    if actor.session_id is not None:
        await account_rows.revoke_session(conn, actor.session_id)


# -- organizations ---------------------------------------------------------------------------

async def membership(conn: AsyncConnection, actor: Actor, slug: str) -> Membership:
    """The caller's membership in `slug`; NotFound if there is none (or no such organization)."""
    row = await org_rows.organization_for_member(conn, slug, actor.user_id)
    if row is None:
        raise NotFound(ORGANIZATION_NOT_FOUND)
    role = row.pop("role")
    return Membership(row, role)


async def my_organizations(conn: AsyncConnection, actor: Actor, after: int = 0, limit: int = 100) -> list[dict]:
    return await org_rows.organizations_of_user(conn, actor.user_id, after, limit + 1)


async def create_organization(conn: AsyncConnection, name: str, slug: str | None = None,
                              owner_user_id: int | None = None, plan: str = "starter") -> dict:
    """A new organization with a trial subscription, and its first owner (if given)."""
    name = organizations.check_name(name)
    trial = subscriptions.start_trial(utc_now(), plan)
    candidate = organizations.check_slug(slug) if slug else organizations.slug_from_name(name)
    for _attempt in range(5):
        try:
            async with conn.transaction():
                org = await org_rows.insert_organization(conn, candidate, name)
                await subscription_rows.insert_subscription(conn, org["id"], trial)
                if owner_user_id is not None:
                    await org_rows.insert_membership(conn, org["id"], owner_user_id, "owner")
                await org_rows.record_event(conn, org["id"], owner_user_id, "organization.created",
                                            slug=candidate, plan=trial.plan)
            return org
        except pg_errors.UniqueViolation:
            if slug:  # a slug the caller chose is theirs to change
                raise Conflict(f"the slug {slug!r} is taken; choose another", code="organization.slug_taken") from None
            candidate = organizations.with_suffix(organizations.slug_from_name(name))
    raise Conflict("could not find a free slug; give one explicitly", code="organization.slug_taken")


async def rename_organization(conn: AsyncConnection, actor: Actor, slug: str, name: str) -> dict:
    member = await membership(conn, actor, slug)
    roles.require(member.role, "organization.rename")
    name = organizations.check_name(name)
    async with conn.transaction():
        await org_rows.rename_organization(conn, member.organization_id, name)
        await org_rows.record_event(conn, member.organization_id, actor.user_id, "organization.renamed")
    return (await membership(conn, actor, slug)).organization


async def delete_organization(conn: AsyncConnection, actor: Actor, slug: str) -> None:
    member = await membership(conn, actor, slug)
    roles.require(member.role, "organization.delete")
    async with conn.transaction():
        owned = await org_rows.tenants_of(conn, member.organization_id)
        if owned:
            raise Conflict(f"the organization still owns {len(owned)} tenant(s) ({', '.join(t['id'] for t in owned)}); "
                           "move or depart them first", code="organization.owns_tenants")
        await org_rows.delete_organization(conn, member.organization_id)
        await org_rows.record_event(conn, member.organization_id, actor.user_id, "organization.deleted",
                                    slug=member.organization["slug"])


async def organization_tenants(conn: AsyncConnection, actor: Actor, slug: str) -> list[dict]:
    member = await membership(conn, actor, slug)
    return await org_rows.tenants_of(conn, member.organization_id)


async def attach_tenant(conn: AsyncConnection, slug: str, tenant_id: str) -> None:
    """Operator action (CLI): record that the organization owns this registered tenant."""
    org = await org_rows.organization_by_slug(conn, slug)
    if org is None:
        raise NotFound(f"no organization with the slug {slug!r}")
    async with conn.transaction():
        if not await org_rows.attach_tenant(conn, org["id"], tenant_id):
            raise NotFound(f"no tenant {tenant_id!r} in the mesh registry")
        await org_rows.record_event(conn, org["id"], None, "organization.tenant_attached", tenant=tenant_id)


async def organization_events(conn: AsyncConnection, actor: Actor, slug: str, after: int = 0,
                              limit: int = 100) -> list[dict]:
    member = await membership(conn, actor, slug)
    roles.require(member.role, "member.manage")
    return await org_rows.events_of(conn, member.organization_id, after, limit + 1)


# -- members ---------------------------------------------------------------------------------

async def list_members(conn: AsyncConnection, actor: Actor, slug: str, after: int = 0,
                       limit: int = 100) -> list[dict]:
    member = await membership(conn, actor, slug)
    return await org_rows.members(conn, member.organization_id, after, limit + 1)


async def _add_member(conn: AsyncConnection, organization_id: int, user_id: int, role: str,
                      actor_user_id: int | None) -> None:
    """In the caller's transaction: seat check under the organization's lock, then insert."""
    await org_rows.lock_organization(conn, organization_id)
    if await org_rows.member(conn, organization_id, user_id) is not None:
        raise Conflict("that user is a member already", code="membership.exists")
    sub = await subscription_rows.subscription_of(conn, organization_id)
    subscriptions.check_seat_free(sub, utc_now(), await org_rows.count_members(conn, organization_id))
    await org_rows.insert_membership(conn, organization_id, user_id, role)
    await org_rows.record_event(conn, organization_id, actor_user_id, "membership.added",
                                member=user_id, role=role)


async def invite_member(conn: AsyncConnection, passwords: accounts.Passwords, actor: Actor, slug: str,
                        email: str, role: str, display_name: str | None = None) -> tuple[dict, str | None]:
    """Add the user with this email (creating the account if there is none) to the organization.
    Returns the membership and, for a new account, its first password (shown once, to be
    handed over; the portal sends no mail)."""
    member = await membership(conn, actor, slug)
    roles.require_can_set_role(member.role, None, roles.check_role(role))
    email = accounts.check_email(email)
    initial_password = new_hash = name = None
    existing = await account_rows.user_by_email(conn, accounts.email_key(email))
    if existing is None:
        name = accounts.check_display_name(display_name or email.split("@", 1)[0])
        initial_password = accounts.generate_password()
        new_hash = await asyncio.to_thread(passwords.hash, initial_password)
    try:
        async with conn.transaction():
            if existing is None:
                user = await account_rows.insert_user(conn, email, name, new_hash)
                await org_rows.record_event(conn, None, user["id"], "user.created", by=actor.user_id)
                user_id = user["id"]
            else:
                user_id = existing["id"]
            await _add_member(conn, member.organization_id, user_id, role, actor.user_id)
    except pg_errors.UniqueViolation:  # someone created the account or membership just now
        raise Conflict("that user was added concurrently; reload and try again", code="membership.exists") from None
    return await org_rows.member(conn, member.organization_id, user_id), initial_password


async def add_member_as_operator(conn: AsyncConnection, slug: str, user_id: int, role: str) -> None:
    """CLI bootstrap (`ygg portal user create --org`): no acting member, the seat limit holds."""
    org = await org_rows.organization_by_slug(conn, slug)
    if org is None:
        raise NotFound(f"no organization with the slug {slug!r}")
    async with conn.transaction():
        await _add_member(conn, org["id"], user_id, roles.check_role(role), None)


async def change_member_role(conn: AsyncConnection, actor: Actor, slug: str, user_id: int, role: str) -> dict:
    member = await membership(conn, actor, slug)
    roles.require(member.role, "member.manage")
    role = roles.check_role(role)
    async with conn.transaction():
        await org_rows.lock_organization(conn, member.organization_id)
        target = await org_rows.member(conn, member.organization_id, user_id, lock=True)
        if target is None:
            raise NotFound(MEMBER_NOT_FOUND)
        roles.require_can_set_role(member.role, target["role"], role)
        await org_rows.set_role(conn, member.organization_id, user_id, role)
        roles.require_an_owner_remains(await org_rows.count_members(conn, member.organization_id, "owner"))
        if role not in tickets.ASSIGNABLE_ROLES:
            await ticket_rows.unassign_user(conn, member.organization_id, user_id)
        await org_rows.record_event(conn, member.organization_id, actor.user_id, "membership.role_changed",
                                    member=user_id, old=target["role"], new=role)
    return await org_rows.member(conn, member.organization_id, user_id)


async def remove_member(conn: AsyncConnection, actor: Actor, slug: str, user_id: int) -> None:
    """Admins remove members and admins, owners anyone; everyone may leave. The last owner
    cannot go."""
    member = await membership(conn, actor, slug)
    async with conn.transaction():
        await org_rows.lock_organization(conn, member.organization_id)
        target = await org_rows.member(conn, member.organization_id, user_id, lock=True)
        if target is None:
            raise NotFound(MEMBER_NOT_FOUND)
        if user_id != actor.user_id:
            roles.require_can_set_role(member.role, target["role"], None)
        await org_rows.delete_membership(conn, member.organization_id, user_id)
        roles.require_an_owner_remains(await org_rows.count_members(conn, member.organization_id, "owner"))
        await ticket_rows.unassign_user(conn, member.organization_id, user_id)
        await org_rows.record_event(conn, member.organization_id, actor.user_id, "membership.removed",
                                    member=user_id, role=target["role"])


# -- subscription ----------------------------------------------------------------------------

def subscription_view(sub: subscriptions.Subscription, members: int) -> dict:
    plan = PLANS[sub.plan]
    return {**asdict(sub), "plan_title": plan.title, "plan_max_seats": plan.max_seats, "seats_used": members}


async def get_subscription(conn: AsyncConnection, actor: Actor, slug: str) -> dict:
    member = await membership(conn, actor, slug)
    sub = subscriptions.settle(await subscription_rows.subscription_of(conn, member.organization_id), utc_now())
    return subscription_view(sub, await org_rows.count_members(conn, member.organization_id))


SubscriptionChange = Callable[[subscriptions.Subscription, datetime, int], subscriptions.Subscription]


async def _update_subscription(conn: AsyncConnection, actor: Actor, slug: str, action: str,
                               change: SubscriptionChange) -> dict:
    """`change(current, now, member_count)` gives the new state; it is saved with an event."""
    member = await membership(conn, actor, slug)
    roles.require(member.role, "subscription.manage")
    async with conn.transaction():
        # The row lock makes read-settle-change-write one step against concurrent changes.
        current = await subscription_rows.subscription_of(conn, member.organization_id, lock=True)
        members = await org_rows.count_members(conn, member.organization_id)
        updated = change(current, utc_now(), members)
        await subscription_rows.save_subscription(conn, member.organization_id, updated)
        await org_rows.record_event(conn, member.organization_id, actor.user_id, action,
                                    plan=updated.plan, seats=updated.seats, status=updated.status)
    return subscription_view(updated, members)


async def change_subscription(conn: AsyncConnection, actor: Actor, slug: str, plan: str | None,
                              seats: int | None) -> dict:
    return await _update_subscription(
        conn, actor, slug, "subscription.changed",
        lambda sub, now, members: subscriptions.change(sub, now, members, plan=plan, seats=seats))


async def renew_subscription(conn: AsyncConnection, actor: Actor, slug: str) -> dict:
    return await _update_subscription(conn, actor, slug, "subscription.renewed",
                                      lambda sub, now, members: subscriptions.renew(sub, now))


async def cancel_subscription(conn: AsyncConnection, actor: Actor, slug: str, at_period_end: bool) -> dict:
    return await _update_subscription(
        conn, actor, slug, "subscription.cancelled" if not at_period_end else "subscription.cancel_scheduled",
        lambda sub, now, members: subscriptions.cancel(sub, now, at_period_end))


# -- tickets ---------------------------------------------------------------------------------

async def list_tickets(conn: AsyncConnection, actor: Actor, slug: str, status: str | None = None,
                       after: int = 0, limit: int = 50) -> list[dict]:
    member = await membership(conn, actor, slug)
    return await ticket_rows.tickets(conn, member.organization_id, tickets.check_status_filter(status),
                                     after, limit + 1)


async def open_ticket(conn: AsyncConnection, actor: Actor, slug: str, subject: str, body: str) -> dict:
    member = await membership(conn, actor, slug)
    roles.require(member.role, "ticket.open")
    subject = tickets.check_text("subject", subject, tickets.SUBJECT_MAX)
    body = tickets.check_text("body", body, tickets.BODY_MAX)
    async with conn.transaction():
        ticket_id = await ticket_rows.insert_ticket(conn, member.organization_id, subject, body, actor.user_id)
        await org_rows.record_event(conn, member.organization_id, actor.user_id, "ticket.opened", ticket=ticket_id)
    return await ticket_rows.ticket(conn, member.organization_id, ticket_id)


async def get_ticket(conn: AsyncConnection, actor: Actor, slug: str, ticket_id: int) -> dict:
    member = await membership(conn, actor, slug)
    row = await ticket_rows.ticket(conn, member.organization_id, ticket_id)
    if row is None:
        raise NotFound(TICKET_NOT_FOUND)
    return row


async def list_comments(conn: AsyncConnection, actor: Actor, slug: str, ticket_id: int, after: int = 0,
                        limit: int = 100) -> list[dict]:
    row = await get_ticket(conn, actor, slug, ticket_id)
    return await ticket_rows.comments(conn, row["id"], after, limit + 1)


async def comment_on_ticket(conn: AsyncConnection, actor: Actor, slug: str, ticket_id: int, body: str) -> dict:
    member = await membership(conn, actor, slug)
    roles.require(member.role, "ticket.comment")
    body = tickets.check_text("comment", body, tickets.BODY_MAX)
    async with conn.transaction():
        locked = await ticket_rows.lock_ticket(conn, member.organization_id, ticket_id)
        if locked is None:
            raise NotFound(TICKET_NOT_FOUND)
        if locked["status"] == "closed":
            raise Conflict("the ticket is closed; reopen it to comment", code="ticket.closed")
        comment = await ticket_rows.insert_comment(conn, ticket_id, actor.user_id, body)
        await org_rows.record_event(conn, member.organization_id, actor.user_id, "ticket.commented",
                                    ticket=ticket_id, comment=comment["id"])
    return comment


async def _move_ticket(conn: AsyncConnection, actor: Actor, slug: str, ticket_id: int, target: str) -> dict:
    member = await membership(conn, actor, slug)
    async with conn.transaction():
        locked = await ticket_rows.lock_ticket(conn, member.organization_id, ticket_id)
        if locked is None:
            raise NotFound(TICKET_NOT_FOUND)
        roles.require(member.role, "ticket.manage")
        tickets.check_transition(locked["status"], target)
        await ticket_rows.set_status(conn, ticket_id, target)
        await org_rows.record_event(conn, member.organization_id, actor.user_id, f"ticket.{target}",
                                    ticket=ticket_id)
    return await ticket_rows.ticket(conn, member.organization_id, ticket_id)


async def close_ticket(conn: AsyncConnection, actor: Actor, slug: str, ticket_id: int) -> dict:
    return await _move_ticket(conn, actor, slug, ticket_id, "closed")


async def reopen_ticket(conn: AsyncConnection, actor: Actor, slug: str, ticket_id: int) -> dict:
    return await _move_ticket(conn, actor, slug, ticket_id, "open")


async def assign_ticket(conn: AsyncConnection, actor: Actor, slug: str, ticket_id: int,
                        assignee_id: int | None) -> dict:
    """Assign to an admin or owner of the ticket's organization, or unassign with None."""
    member = await membership(conn, actor, slug)
    async with conn.transaction():
        locked = await ticket_rows.lock_ticket(conn, member.organization_id, ticket_id)
        if locked is None:
            raise NotFound(TICKET_NOT_FOUND)
        roles.require(member.role, "ticket.manage")
        if assignee_id is not None:
            # Same answer for "not a member" and "no such user": other organizations' people
            # are not confirmed to exist.
            assignee = await org_rows.member(conn, member.organization_id, assignee_id)
            tickets.check_assignee_role(assignee["role"] if assignee else None)
        await ticket_rows.set_assignee(conn, ticket_id, assignee_id)
        await org_rows.record_event(conn, member.organization_id, actor.user_id, "ticket.assigned",
                                    ticket=ticket_id, assignee=assignee_id)
    return await ticket_rows.ticket(conn, member.organization_id, ticket_id)
