"""/api/v1/orgs: organizations, their members, tenants, subscription and event trail, and the
plan catalogue. An organization the caller is not a member of is 404, like one that does not
exist."""

from dataclasses import asdict

from fastapi import APIRouter, Response

from yggdrasil.portal import services
from yggdrasil.portal.api.deps import ApiCaller, PortalDep
from yggdrasil.portal.api.pagination import After, ItemId, Limit, Page, page_of
from yggdrasil.portal.api.schemas import (
    InvitedMember,
    Member,
    MemberInvite,
    MemberUpdate,
    Organization,
    OrganizationCreate,
    OrganizationUpdate,
    PlanOut,
    PortalEvent,
    Subscription,
    SubscriptionCancel,
    SubscriptionUpdate,
    Tenant,
)
from yggdrasil.portal.domain.plans import PLANS

router = APIRouter(tags=["organizations"])


@router.get("/plans", response_model=list[PlanOut], summary="The plan catalogue")
async def list_plans(caller: ApiCaller) -> list[dict]:
    return [asdict(plan) for plan in PLANS.values()]


@router.get("/orgs", response_model=Page[Organization], summary="The caller's organizations")
async def list_organizations(caller: ApiCaller, limit: Limit = 100, after: After = 0) -> dict:
    return page_of(await services.my_organizations(caller.conn, caller.actor, after, limit), limit)


@router.post("/orgs", status_code=201, response_model=Organization,
             summary="Create an organization (the caller becomes its owner; trial subscription)")
async def create_organization(body: OrganizationCreate, caller: ApiCaller) -> dict:
    org = await services.create_organization(caller.conn, body.name, body.slug, owner_user_id=caller.actor.user_id)
    return {**org, "role": "owner"}


@router.get("/orgs/{slug}", response_model=Organization)
async def get_organization(slug: str, caller: ApiCaller) -> dict:
    member = await services.membership(caller.conn, caller.actor, slug)
    return {**member.organization, "role": member.role}


@router.patch("/orgs/{slug}", response_model=Organization, summary="Rename (admin)")
async def update_organization(slug: str, body: OrganizationUpdate, caller: ApiCaller) -> dict:
    org = await services.rename_organization(caller.conn, caller.actor, slug, body.name)
    return {**org, "role": (await services.membership(caller.conn, caller.actor, slug)).role}


@router.delete("/orgs/{slug}", status_code=204, summary="Delete the organization (owner)")
async def delete_organization(slug: str, caller: ApiCaller) -> Response:
    await services.delete_organization(caller.conn, caller.actor, slug)
    return Response(status_code=204)


@router.get("/orgs/{slug}/tenants", response_model=list[Tenant], summary="The tenants this organization owns")
async def list_tenants(slug: str, caller: ApiCaller) -> list[dict]:
    return await services.organization_tenants(caller.conn, caller.actor, slug)


@router.get("/orgs/{slug}/events", response_model=Page[PortalEvent], summary="Who did what (admin)")
async def list_events(slug: str, caller: ApiCaller, limit: Limit = 100, after: After = 0) -> dict:
    return page_of(await services.organization_events(caller.conn, caller.actor, slug, after, limit), limit)


# -- members ---------------------------------------------------------------------------------

@router.get("/orgs/{slug}/members", response_model=Page[Member], tags=["members"])
async def list_members(slug: str, caller: ApiCaller, limit: Limit = 100, after: After = 0) -> dict:
    return page_of(await services.list_members(caller.conn, caller.actor, slug, after, limit), limit, key="user_id")


@router.post("/orgs/{slug}/members", status_code=201, response_model=InvitedMember, tags=["members"],
             summary="Add a member by email (admin; owners for owners); 409 when no seat is free",
             responses={409: {"description": "no free seat, or a member already"}})
async def invite_member(slug: str, body: MemberInvite, caller: ApiCaller, portal: PortalDep) -> dict:
    member, initial_password = await services.invite_member(caller.conn, portal.passwords, caller.actor, slug,
                                                            body.email, body.role, body.display_name)
    return {**member, "initial_password": initial_password}


@router.patch("/orgs/{slug}/members/{user_id}", response_model=Member, tags=["members"],
              summary="Change a member's role (admin; owners for owners)")
async def update_member(slug: str, user_id: ItemId, body: MemberUpdate, caller: ApiCaller) -> dict:
    return await services.change_member_role(caller.conn, caller.actor, slug, user_id, body.role)


@router.delete("/orgs/{slug}/members/{user_id}", status_code=204, tags=["members"],
               summary="Remove a member (admin; owners for owners; anyone may leave)")
async def remove_member(slug: str, user_id: ItemId, caller: ApiCaller) -> Response:
    await services.remove_member(caller.conn, caller.actor, slug, user_id)
    return Response(status_code=204)


# -- subscription ----------------------------------------------------------------------------

@router.get("/orgs/{slug}/subscription", response_model=Subscription, tags=["subscription"])
async def get_subscription(slug: str, caller: ApiCaller) -> dict:
    return await services.get_subscription(caller.conn, caller.actor, slug)


@router.patch("/orgs/{slug}/subscription", response_model=Subscription, tags=["subscription"],
              summary="Change plan and/or seats (owner)")
async def update_subscription(slug: str, body: SubscriptionUpdate, caller: ApiCaller) -> dict:
    return await services.change_subscription(caller.conn, caller.actor, slug, body.plan, body.seats)


@router.post("/orgs/{slug}/subscription/renew", response_model=Subscription, tags=["subscription"],
             summary="Renew: the period advances by a month (owner)")
async def renew_subscription(slug: str, caller: ApiCaller) -> dict:
    return await services.renew_subscription(caller.conn, caller.actor, slug)


@router.post("/orgs/{slug}/subscription/cancel", response_model=Subscription, tags=["subscription"],
             summary="Cancel at the end of the period or now (owner)")
async def cancel_subscription(slug: str, caller: ApiCaller, body: SubscriptionCancel | None = None) -> dict:
    at_period_end = body.at_period_end if body is not None else True
    return await services.cancel_subscription(caller.conn, caller.actor, slug, at_period_end)
