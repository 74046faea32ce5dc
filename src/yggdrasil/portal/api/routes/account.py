"""/api/v1/session and /api/v1/me: signing in and out, the caller's own account."""

import logging

from fastapi import APIRouter, Request, Response

from yggdrasil.portal import services
from yggdrasil.portal.api.deps import (
    ApiCaller,
    ConnectionDep,
    PortalDep,
    check_origin,
    clear_session_cookie,
    client_address,
    set_session_cookie,
)
from yggdrasil.portal.api.schemas import PasswordChange, ProfileUpdate, SignedInSession, SignInRequest, User
from yggdrasil.portal.errors import LoginFailed, LoginThrottled

log = logging.getLogger(__name__)
router = APIRouter(tags=["account"])


async def sign_in(request: Request, portal, conn, email: str, password: str) -> services.SignedIn:  # noqa: ANN001
    """Shared by the API and the login page: counts the outcome in the metrics."""
    check_origin(request)
    try:
        signed_in = await services.sign_in(
            conn, portal.passwords, portal.throttle, email, password, client_address(request),
            request.headers.get("user-agent", ""), portal.settings.portal_session_max_age_seconds)
    except LoginThrottled as exc:
        portal.metrics.sign_ins.labels("throttled").inc()
        log.warning("sign-in refused: locked", extra={"client": client_address(request),
                                                      "retry_after": exc.retry_after_seconds})
        raise
    except LoginFailed:
        portal.metrics.sign_ins.labels("failed").inc()
        log.info("sign-in failed", extra={"client": client_address(request)})
        raise
    portal.metrics.sign_ins.labels("ok").inc()
    return signed_in


def _user(actor: services.Actor) -> dict:
    return {"id": actor.user_id, "email": actor.email, "display_name": actor.display_name}


@router.post("/session", status_code=201, response_model=SignedInSession,
             summary="Sign in: a session token (bearer) and its CSRF token; also sets the session cookie",
             responses={401: {"description": "wrong email or password"},
                        429: {"description": "too many failed attempts; see Retry-After"}})
async def create_session(body: SignInRequest, request: Request, response: Response, portal: PortalDep,
                         conn: ConnectionDep) -> dict:
    signed_in = await sign_in(request, portal, conn, body.email, body.password)
    set_session_cookie(response, portal, signed_in.token)
    return {"token": signed_in.token, "csrf_token": signed_in.session.csrf_token,
            "expires_at": signed_in.session.expires_at, "user": _user(signed_in.session.actor)}


@router.delete("/session", status_code=204, summary="Sign out: the session is revoked")
async def delete_session(caller: ApiCaller, portal: PortalDep) -> Response:
    await services.sign_out(caller.conn, caller.actor)
    response = Response(status_code=204)
    clear_session_cookie(response, portal)
    return response


@router.get("/me", response_model=User, summary="The signed-in user")
async def get_me(caller: ApiCaller) -> dict:
    return _user(caller.actor)


@router.patch("/me", response_model=User, summary="Change the display name")
async def update_me(body: ProfileUpdate, caller: ApiCaller) -> dict:
    return await services.update_profile(caller.conn, caller.actor, body.display_name)


@router.post("/me/password", status_code=204, summary="Change the password (other sessions are signed out)")
async def change_password(body: PasswordChange, caller: ApiCaller, portal: PortalDep) -> Response:
    await services.change_password(caller.conn, portal.passwords, caller.actor, body.current_password,
                                   body.new_password)
    return Response(status_code=204)
