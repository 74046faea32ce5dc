"""The mesh app's routes: every admin route checks the admin token; the registry and the proxy
(whose credential is the tenant's own token) do not."""

import pytest

from yggdrasil.mesh.api.app import ADMIN_MODULES
from yggdrasil.mesh.api.deps import require_admin
from yggdrasil.mesh.api.routes import proxy, registry

pytestmark = pytest.mark.unit


def _dependency_calls(dependant):
    for dep in dependant.dependencies:
        yield dep.call
        yield from _dependency_calls(dep)


def test_every_admin_route_requires_an_admin_token_and_the_public_ones_do_not() -> None:
    admin_routes = [route for module in ADMIN_MODULES for route in module.router.routes]
    assert len(admin_routes) >= 15
    for route in admin_routes:
        assert require_admin in set(_dependency_calls(route.dependant)), f"{route.path} has no admin check"
    public_routes = [*registry.router.routes, *proxy.router.routes]
    assert {route.path for route in public_routes} == {"/registry/v1/tenants/{tenant_id}/partners",
                                                       "/proxy/{tenant_id}/{path:path}"}
    for route in public_routes:
        assert require_admin not in set(_dependency_calls(route.dependant)), route.path
