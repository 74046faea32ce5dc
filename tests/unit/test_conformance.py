"""The codebase's own invariants, checked by walking its registries (see STYLE.md §12)."""

import re

import pytest
import typer.main

from yggdrasil.db import load_migrations
from yggdrasil.settings import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("package", ["yggdrasil.tenant"])
def test_migrations_are_numbered_without_gaps_and_open_with_a_comment_saying_why(package):
    migrations = load_migrations(package)
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    for m in migrations:
        assert m.sql.startswith(f"-- {m.version:04d}_{m.name}.sql\n-- "), m.name


def test_every_api_route_requires_a_token():
    from yggdrasil.tenant.api.app import API_MODULES
    from yggdrasil.tenant.api.deps import authenticate

    def dependency_calls(dependant):
        for dep in dependant.dependencies:
            yield dep.call
            yield from dependency_calls(dep)

    api_routes = [route for module in API_MODULES for route in module.router.routes]
    assert len(api_routes) > 10
    for route in api_routes:
        assert authenticate in set(dependency_calls(route.dependant)), f"{route.path} has no role check"


def test_every_cli_command_explains_itself():
    from yggdrasil.cli import app

    def walk(group: typer.Typer, prefix: str):
        for command in group.registered_commands:
            yield f"{prefix} {command.name or command.callback.__name__}", command.help or command.callback.__doc__
        for sub in group.registered_groups:
            yield f"{prefix} {sub.name}", sub.typer_instance.info.help
            yield from walk(sub.typer_instance, f"{prefix} {sub.name}")

    commands = list(walk(app, "ygg"))
    assert len(commands) >= 5
    for name, help_text in commands:
        assert help_text and len(help_text.strip()) > 10, f"`{name}` has no --help text"


def test_settings_refuse_a_malformed_tenant_id():
    with pytest.raises(ValueError):
        Settings(tenant_id="ACME; DROP")
    assert re.fullmatch(r"[a-z][a-z0-9-]+", Settings(tenant_id="acme-2").tenant_id)
