"""The state-changing actions of an order (`POST /<orders>/{id}/confirm|ship|receive|cancel`):
one shape for every action of both kinds of order, so each router declares only what differs."""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Response

from yggdrasil.tenant.api.deps import ServicesDep, write
from yggdrasil.tenant.api.fields import PathId
from yggdrasil.tenant.api.routes.order_models import OrderAction, action_version, written_order_response

# (action, use case, role dependency, cache tags to drop, summary)
ActionSpec = tuple[str, Callable[..., Awaitable[Any]], Any, frozenset[str], str]


def add_order_actions(
    router: APIRouter, *, resource: str, kind: str, actions: list[ActionSpec],
    response_model: type, to_out: Callable[[Any], Any], aggregate_type: str,
) -> None:
    for action, use_case, principal_dependency, tags, summary in actions:
        _add_action(router, resource, kind, action, use_case, principal_dependency, tags, summary,
                    response_model, to_out, aggregate_type)


def _add_action(router, resource, kind, action, use_case, principal_dependency, tags, summary,
                response_model, to_out, aggregate_type) -> None:  # noqa: ANN001 - see add_order_actions
    # Annotations are evaluated here, at definition time, so FastAPI sees this action's role
    # dependency; that is why this module must not use `from __future__ import annotations`.
    async def endpoint(
        order_id: PathId, services: ServicesDep, principal: principal_dependency, body: OrderAction | None = None,
    ) -> Response:
        version = action_version(body)
        order = await write(services, principal, tags,
                            lambda conn: use_case(conn, order_id, version=version, outbound=services.outbound))
        return await written_order_response(services, aggregate_type, order, to_out)

    endpoint.__name__ = f"{action}_{kind}"
    router.add_api_route(f"/{resource}/{{order_id}}/{action}", endpoint, methods=["POST"],
                         response_model=response_model, summary=summary, name=endpoint.__name__)
