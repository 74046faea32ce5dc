"""/api/v1/orgs/{slug}/tickets: support tickets and their comments."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from yggdrasil.portal import services
from yggdrasil.portal.api.deps import ApiCaller
from yggdrasil.portal.api.pagination import After, ItemId, Limit, Page, page_of
from yggdrasil.portal.api.schemas import Comment, CommentCreate, Ticket, TicketAssign, TicketCreate

router = APIRouter(tags=["tickets"])

StatusFilter = Annotated[Literal["open", "closed"] | None, Query(description="only tickets in this status")]


@router.get("/orgs/{slug}/tickets", response_model=Page[Ticket], summary="Tickets, oldest first")
async def list_tickets(slug: str, caller: ApiCaller, status: StatusFilter = None, limit: Limit = 50,
                       after: After = 0) -> dict:
    return page_of(await services.list_tickets(caller.conn, caller.actor, slug, status, after, limit), limit)


@router.post("/orgs/{slug}/tickets", status_code=201, response_model=Ticket, summary="Open a ticket")
async def open_ticket(slug: str, body: TicketCreate, caller: ApiCaller) -> dict:
    return await services.open_ticket(caller.conn, caller.actor, slug, body.subject, body.body)


@router.get("/orgs/{slug}/tickets/{ticket_id}", response_model=Ticket)
async def get_ticket(slug: str, ticket_id: ItemId, caller: ApiCaller) -> dict:
    return await services.get_ticket(caller.conn, caller.actor, slug, ticket_id)


@router.get("/orgs/{slug}/tickets/{ticket_id}/comments", response_model=Page[Comment])
async def list_comments(slug: str, ticket_id: ItemId, caller: ApiCaller, limit: Limit = 100, after: After = 0) -> dict:
    return page_of(await services.list_comments(caller.conn, caller.actor, slug, ticket_id, after, limit), limit)


@router.post("/orgs/{slug}/tickets/{ticket_id}/comments", status_code=201, response_model=Comment,
             summary="Comment on an open ticket")
async def add_comment(slug: str, ticket_id: ItemId, body: CommentCreate, caller: ApiCaller) -> dict:
    return await services.comment_on_ticket(caller.conn, caller.actor, slug, ticket_id, body.body)


@router.post("/orgs/{slug}/tickets/{ticket_id}/assign", response_model=Ticket,
             summary="Assign to an admin or owner of the organization, or unassign (admin)")
async def assign_ticket(slug: str, ticket_id: ItemId, body: TicketAssign, caller: ApiCaller) -> dict:
    return await services.assign_ticket(caller.conn, caller.actor, slug, ticket_id, body.assignee_id)


@router.post("/orgs/{slug}/tickets/{ticket_id}/close", response_model=Ticket, summary="Close (admin)")
async def close_ticket(slug: str, ticket_id: ItemId, caller: ApiCaller) -> dict:
    return await services.close_ticket(caller.conn, caller.actor, slug, ticket_id)


@router.post("/orgs/{slug}/tickets/{ticket_id}/reopen", response_model=Ticket, summary="Reopen (admin)")
async def reopen_ticket(slug: str, ticket_id: ItemId, caller: ApiCaller) -> dict:
    return await services.reopen_ticket(caller.conn, caller.actor, slug, ticket_id)
