"""The portal's HTTP surface keeps its own rules: every API route but signing in needs a session,
every state-changing page needs a session (and with it the CSRF check), and route modules keep
real annotations for FastAPI."""

from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from yggdrasil.portal.api import deps
from yggdrasil.portal.api.app import API_MODULES
from yggdrasil.portal.api.routes import web

pytestmark = pytest.mark.unit

OPEN_API_ROUTES = {("POST", "/session")}
OPEN_PAGES = {("GET", "/login"), ("POST", "/login"), ("GET", "/static/portal.css")}


def dependency_calls(dependant):  # noqa: ANN001, ANN201
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from dependency_calls(dependency)


def routes(router) -> list[tuple[str, str, APIRoute]]:  # noqa: ANN001
    return [(method, route.path, route) for route in router.routes if isinstance(route, APIRoute)
            for method in route.methods]


def test_every_api_route_but_sign_in_requires_a_session():
    api_routes = [r for module in API_MODULES for r in routes(module.router)]
    assert len(api_routes) > 20
    for method, path, route in api_routes:
        if (method, path) in OPEN_API_ROUTES:
            continue
        assert deps.api_caller in set(dependency_calls(route.dependant)), f"{method} {path} has no session check"


def test_every_page_but_sign_in_requires_a_session_and_so_every_form_post_is_csrf_checked():
    pages = routes(web.router)
    assert sum(1 for method, _, _ in pages if method == "POST") > 15
    for method, path, route in pages:
        if (method, path) in OPEN_PAGES:
            continue
        calls = set(dependency_calls(route.dependant))
        assert deps.web_caller in calls, f"{method} {path} has no session check"


def test_route_modules_keep_real_annotations():
    api_folder = Path(deps.__file__).parent
    for module in [*api_folder.glob("*.py"), *api_folder.glob("routes/*.py")]:
        assert "from __future__ import annotations" not in module.read_text(), module.name
