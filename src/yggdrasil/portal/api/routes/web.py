"""The server-rendered pages: sign-in, organizations, dashboard, members, subscription, tickets,
account. Plain HTML forms; every POST carries the session's CSRF token (checked in deps) and
answers with a redirect to the page it changed (post/redirect/get), or with that page and a
notice when there is something to show once (a new member's first password)."""

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from yggdrasil.portal import services
from yggdrasil.portal.api.deps import (
    ConnectionDep,
    OptionalWebCaller,
    PortalDep,
    WebCaller,
    clear_session_cookie,
    set_session_cookie,
)
from yggdrasil.portal.api.pagination import MAX_ID, ItemId, page_of
from yggdrasil.portal.api.routes.account import sign_in
from yggdrasil.portal.domain import roles
from yggdrasil.portal.domain.plans import PLANS
from yggdrasil.portal.errors import InvalidInput, LoginFailed, LoginThrottled

router = APIRouter(include_in_schema=False)

TICKETS_PER_PAGE = 25
COMMENTS_SHOWN = 500


def _pages(request: Request):  # noqa: ANN202
    return request.app.state.pages


def _field(form: FormData, name: str, default: str | None = None) -> str:
    value = form.get(name, default)
    if not isinstance(value, str):
        raise InvalidInput(f"the form field {name!r} is missing")
    return value


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never `//evil.example` or `https://...` (an open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


async def _org_page(request: Request, caller, slug: str, template: str, status_code: int = 200,  # noqa: ANN001
                    **context: object) -> Response:
    member = await services.membership(caller.conn, caller.actor, slug)
    return _pages(request).render(request, template, status_code=status_code, viewer=caller,
                                  org=member.organization, role=member.role,
                                  can=lambda action: roles.allows(member.role, action), **context)


# -- static ----------------------------------------------------------------------------------

@router.get("/static/portal.css")
async def stylesheet(request: Request) -> Response:
    return Response(_pages(request).stylesheet(), media_type="text/css",
                    headers={"cache-control": "public, max-age=3600"})


# -- sign in and out -------------------------------------------------------------------------

@router.get("/login")
async def login_page(request: Request, caller: OptionalWebCaller, next: str | None = None) -> Response:
    if caller is not None:
        return _back(_safe_next(next))
    return _pages(request).render(request, "login.html", next=_safe_next(next), email="", error=None)


@router.post("/login")
async def login(request: Request, portal: PortalDep, conn: ConnectionDep) -> Response:
    form = await request.form()
    email, target = _field(form, "email", ""), _safe_next(_field(form, "next", "/"))
    try:
        signed_in = await sign_in(request, portal, conn, email, _field(form, "password", ""))
    except (LoginFailed, LoginThrottled) as exc:
        headers = {"Retry-After": str(exc.retry_after_seconds)} if isinstance(exc, LoginThrottled) else None
        return _pages(request).render(request, "login.html", status_code=429 if headers else 401, headers=headers,
                                      next=target, email=email, error=exc.message)
    response = _back(target)
    set_session_cookie(response, portal, signed_in.token)
    return response


@router.post("/logout")
async def logout(caller: WebCaller, portal: PortalDep) -> Response:
    await services.sign_out(caller.conn, caller.actor)
    response = _back("/login")
    clear_session_cookie(response, portal)
    return response


# -- account ---------------------------------------------------------------------------------

@router.get("/account")
async def account_page(request: Request, caller: WebCaller) -> Response:
    return _pages(request).render(request, "account.html", viewer=caller, notice=None)


@router.post("/account")
async def update_account(request: Request, caller: WebCaller) -> Response:
    form = await request.form()
    await services.update_profile(caller.conn, caller.actor, _field(form, "display_name"))
    return _back("/account")


@router.post("/account/password")
async def change_password(request: Request, caller: WebCaller, portal: PortalDep) -> Response:
    form = await request.form()
    await services.change_password(caller.conn, portal.passwords, caller.actor, _field(form, "current_password"),
                                   _field(form, "new_password"))
    return _pages(request).render(request, "account.html", viewer=caller,
                                  notice="Password changed. Your other sessions were signed out.")


# -- organizations ---------------------------------------------------------------------------

@router.get("/")
async def home(request: Request, caller: WebCaller) -> Response:
    organizations = await services.my_organizations(caller.conn, caller.actor, 0, 500)
    return _pages(request).render(request, "home.html", viewer=caller, organizations=organizations[:500])


@router.post("/orgs")
async def create_organization(request: Request, caller: WebCaller) -> Response:
    form = await request.form()
    org = await services.create_organization(caller.conn, _field(form, "name"), form.get("slug") or None,
                                             owner_user_id=caller.actor.user_id)
    return _back(f"/orgs/{org['slug']}")


@router.get("/orgs/{slug}")
async def dashboard(request: Request, slug: str, caller: WebCaller) -> Response:
    subscription = await services.get_subscription(caller.conn, caller.actor, slug)
    open_tickets = await services.list_tickets(caller.conn, caller.actor, slug, "open", 0, 10)
    tenants = await services.organization_tenants(caller.conn, caller.actor, slug)
    return await _org_page(request, caller, slug, "dashboard.html", subscription=subscription,
                           open_tickets=open_tickets[:10], more_open=len(open_tickets) > 10, tenants=tenants)


@router.post("/orgs/{slug}/rename")
async def rename_organization(request: Request, slug: str, caller: WebCaller) -> Response:
    form = await request.form()
    await services.rename_organization(caller.conn, caller.actor, slug, _field(form, "name"))
    return _back(f"/orgs/{slug}")


@router.post("/orgs/{slug}/delete")
async def delete_organization(request: Request, slug: str, caller: WebCaller) -> Response:
    form = await request.form()
    if _field(form, "confirm_slug", "") != slug:
        raise InvalidInput("type the organization's slug to confirm its deletion")
    await services.delete_organization(caller.conn, caller.actor, slug)
    return _back("/")


# -- members ---------------------------------------------------------------------------------

async def _members_page(request: Request, caller, slug: str, notice: str | None = None,  # noqa: ANN001
                        status_code: int = 200) -> Response:
    members = await services.list_members(caller.conn, caller.actor, slug, 0, 500)
    subscription = await services.get_subscription(caller.conn, caller.actor, slug)
    return await _org_page(request, caller, slug, "members.html", status_code=status_code,
                           members=members[:500], subscription=subscription, notice=notice,
                           role_choices=roles.ROLES)


@router.get("/orgs/{slug}/members")
async def members_page(request: Request, slug: str, caller: WebCaller) -> Response:
    return await _members_page(request, caller, slug)


@router.post("/orgs/{slug}/members")
async def invite_member(request: Request, slug: str, caller: WebCaller, portal: PortalDep) -> Response:
    form = await request.form()
    member, initial_password = await services.invite_member(
        caller.conn, portal.passwords, caller.actor, slug, _field(form, "email"), _field(form, "role", "member"),
        form.get("display_name") or None)
    notice = f"{member['email']} was added as {member['role']}."
    if initial_password:
        notice += f" Their account is new; its first password is {initial_password} (shown only now)."
    return await _members_page(request, caller, slug, notice=notice, status_code=201)


@router.post("/orgs/{slug}/members/{user_id}/role")
async def change_role(request: Request, slug: str, user_id: ItemId, caller: WebCaller) -> Response:
    form = await request.form()
    await services.change_member_role(caller.conn, caller.actor, slug, user_id, _field(form, "role"))
    return _back(f"/orgs/{slug}/members")


@router.post("/orgs/{slug}/members/{user_id}/remove")
async def remove_member(slug: str, user_id: ItemId, caller: WebCaller) -> Response:
    await services.remove_member(caller.conn, caller.actor, slug, user_id)
    return _back("/" if user_id == caller.actor.user_id else f"/orgs/{slug}/members")


# -- subscription ----------------------------------------------------------------------------

@router.get("/orgs/{slug}/subscription")
async def subscription_page(request: Request, slug: str, caller: WebCaller) -> Response:
    subscription = await services.get_subscription(caller.conn, caller.actor, slug)
    return await _org_page(request, caller, slug, "subscription.html", subscription=subscription,
                           plans=list(PLANS.values()))


@router.post("/orgs/{slug}/subscription")
async def change_subscription(request: Request, slug: str, caller: WebCaller) -> Response:
    form = await request.form()
    seats_text = _field(form, "seats", "").strip()
    if seats_text and not seats_text.isdigit():
        raise InvalidInput("seats must be a whole number")
    await services.change_subscription(caller.conn, caller.actor, slug, form.get("plan") or None,
                                       int(seats_text) if seats_text else None)
    return _back(f"/orgs/{slug}/subscription")


@router.post("/orgs/{slug}/subscription/renew")
async def renew_subscription(slug: str, caller: WebCaller) -> Response:
    await services.renew_subscription(caller.conn, caller.actor, slug)
    return _back(f"/orgs/{slug}/subscription")


@router.post("/orgs/{slug}/subscription/cancel")
async def cancel_subscription(request: Request, slug: str, caller: WebCaller) -> Response:
    form = await request.form()
    await services.cancel_subscription(caller.conn, caller.actor, slug, _field(form, "when", "period_end") != "now")
    return _back(f"/orgs/{slug}/subscription")


# -- tickets ---------------------------------------------------------------------------------

@router.get("/orgs/{slug}/tickets")
async def tickets_page(request: Request, slug: str, caller: WebCaller,
                       status: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
                       after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0) -> Response:
    rows = await services.list_tickets(caller.conn, caller.actor, slug, status, after, TICKETS_PER_PAGE)
    page = page_of(rows, TICKETS_PER_PAGE)
    next_url = None
    if page["next_after"] is not None:
        next_url = f"/orgs/{slug}/tickets?after={page['next_after']}" + (f"&status={quote(status)}" if status else "")
    return await _org_page(request, caller, slug, "tickets.html", tickets=page["items"], status=status,
                           next_url=next_url)


@router.post("/orgs/{slug}/tickets")
async def open_ticket(request: Request, slug: str, caller: WebCaller) -> Response:
    form = await request.form()
    ticket = await services.open_ticket(caller.conn, caller.actor, slug, _field(form, "subject"), _field(form, "body"))
    return _back(f"/orgs/{slug}/tickets/{ticket['id']}")


@router.get("/orgs/{slug}/tickets/{ticket_id}")
async def ticket_page(request: Request, slug: str, ticket_id: ItemId, caller: WebCaller) -> Response:
    ticket = await services.get_ticket(caller.conn, caller.actor, slug, ticket_id)
    comments = await services.list_comments(caller.conn, caller.actor, slug, ticket_id, 0, COMMENTS_SHOWN)
    assignable = [m for m in await services.list_members(caller.conn, caller.actor, slug, 0, 500)
                  if m["role"] in ("admin", "owner")]
    return await _org_page(request, caller, slug, "ticket.html", ticket=ticket, comments=comments[:COMMENTS_SHOWN],
                           assignable=assignable)


@router.post("/orgs/{slug}/tickets/{ticket_id}/comments")
async def comment(request: Request, slug: str, ticket_id: ItemId, caller: WebCaller) -> Response:
    form = await request.form()
    await services.comment_on_ticket(caller.conn, caller.actor, slug, ticket_id, _field(form, "body"))
    return _back(f"/orgs/{slug}/tickets/{ticket_id}")


@router.post("/orgs/{slug}/tickets/{ticket_id}/assign")
async def assign(request: Request, slug: str, ticket_id: ItemId, caller: WebCaller) -> Response:
    form = await request.form()
    assignee = _field(form, "assignee_id", "").strip()
    if assignee and not assignee.isdigit():
        raise InvalidInput("choose a person to assign the ticket to")
    await services.assign_ticket(caller.conn, caller.actor, slug, ticket_id, int(assignee) if assignee else None)
    return _back(f"/orgs/{slug}/tickets/{ticket_id}")


@router.post("/orgs/{slug}/tickets/{ticket_id}/close")
async def close(slug: str, ticket_id: ItemId, caller: WebCaller) -> Response:
    await services.close_ticket(caller.conn, caller.actor, slug, ticket_id)
    return _back(f"/orgs/{slug}/tickets/{ticket_id}")


@router.post("/orgs/{slug}/tickets/{ticket_id}/reopen")
async def reopen(slug: str, ticket_id: ItemId, caller: WebCaller) -> Response:
    await services.reopen_ticket(caller.conn, caller.actor, slug, ticket_id)
    return _back(f"/orgs/{slug}/tickets/{ticket_id}")
