"""The portal's rules without a database: subscriptions, roles, tickets, slugs, passwords, and
that the catalogue in code and the CHECK constraints in 0003_portal.sql name the same things."""

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from yggdrasil.db import load_migrations
from yggdrasil.portal.domain import accounts, organizations, roles, subscriptions, tickets
from yggdrasil.portal.domain.plans import PLANS
from yggdrasil.portal.errors import Conflict, Forbidden, InvalidInput

pytestmark = pytest.mark.unit

NOW = datetime(2024, 1, 31, 12, 0, tzinfo=timezone.utc)


def active(**changes: object) -> subscriptions.Subscription:
    base = subscriptions.Subscription(plan="business", seats=10, status="active",
                                      current_period_start=NOW - timedelta(days=10),
                                      current_period_end=NOW + timedelta(days=20))
    return replace(base, **changes)


def test_months_are_added_on_the_calendar_and_clamped_to_the_month_end():
    assert subscriptions.add_months(NOW, 1) == datetime(2024, 2, 29, 12, 0, tzinfo=timezone.utc)
    assert subscriptions.add_months(datetime(2023, 12, 15, tzinfo=timezone.utc), 1) == \
        datetime(2024, 1, 15, tzinfo=timezone.utc)


def test_time_alone_makes_a_lapsed_subscription_past_due_or_ends_a_scheduled_cancellation():
    lapsed = NOW + timedelta(days=21)
    assert subscriptions.settle(active(), NOW).status == "active"
    assert subscriptions.settle(active(), lapsed).status == "past_due"
    ended = subscriptions.settle(active(cancel_at_period_end=True), lapsed)
    assert (ended.status, ended.cancelled_at) == ("cancelled", active().current_period_end)


def test_renewal_continues_from_the_period_end_and_restarts_a_cancelled_subscription_today():
    renewed = subscriptions.renew(active(), NOW)
    assert renewed.current_period_start == active().current_period_end
    assert renewed.current_period_end == subscriptions.add_months(active().current_period_end, 1)
    cancelled = subscriptions.cancel(active(), NOW, at_period_end=False)
    restarted = subscriptions.renew(cancelled, NOW + timedelta(days=3))
    assert (restarted.status, restarted.current_period_start, restarted.cancelled_at) == \
        ("active", NOW + timedelta(days=3), None)


def test_cancelling_at_period_end_keeps_the_service_and_cancelling_twice_is_a_conflict():
    scheduled = subscriptions.cancel(active(), NOW, at_period_end=True)
    assert (scheduled.status, scheduled.cancel_at_period_end) == ("active", True)
    now = subscriptions.cancel(active(), NOW, at_period_end=False)
    assert (now.status, now.cancelled_at, now.current_period_end) == ("cancelled", NOW, NOW)
    with pytest.raises(Conflict):
        subscriptions.cancel(now, NOW, at_period_end=True)


def test_seats_must_fit_the_plan_and_the_members_and_a_full_subscription_takes_no_one_more():
    with pytest.raises(InvalidInput, match="at most 5 seats"):
        subscriptions.change(active(), NOW, members=1, plan="starter", seats=6)
    with pytest.raises(Conflict, match="has 4 members"):
        subscriptions.change(active(), NOW, members=4, seats=3)
    assert subscriptions.change(active(), NOW, members=2, plan="starter").seats == 5  # capped to the plan
    subscriptions.check_seat_free(active(), NOW, members=9)
    with pytest.raises(Conflict, match="all 10 seats of the business plan are taken"):
        subscriptions.check_seat_free(active(), NOW, members=10)


def test_roles_rank_member_admin_owner_and_refusals_say_what_is_needed():
    assert set(roles.PERMISSIONS.values()) <= set(roles.ROLES)
    assert roles.allows("member", "ticket.comment") and not roles.allows("member", "ticket.manage")
    assert roles.allows("admin", "member.manage") and not roles.allows("admin", "subscription.manage")
    assert all(roles.allows("owner", action) for action in roles.PERMISSIONS)
    with pytest.raises(Forbidden, match="only an owner can change the subscription; your role is admin"):
        roles.require("admin", "subscription.manage")
    roles.require_can_set_role("admin", "member", "admin")
    with pytest.raises(Forbidden):
        roles.require_can_set_role("admin", "member", "owner")
    with pytest.raises(Forbidden):
        roles.require_can_set_role("admin", "owner", None)
    roles.require_can_set_role("owner", "owner", "member")
    with pytest.raises(Conflict):
        roles.require_an_owner_remains(0)
    with pytest.raises(InvalidInput):
        roles.check_role("superuser")


def test_tickets_move_between_open_and_closed_and_go_only_to_admins_or_owners():
    tickets.check_transition("open", "closed")
    tickets.check_transition("closed", "open")
    with pytest.raises(Conflict, match="already closed"):
        tickets.check_transition("closed", "closed")
    tickets.check_assignee_role("admin")
    for role in ("member", None):
        with pytest.raises(InvalidInput):
            tickets.check_assignee_role(role)
    text = "'; DROP TABLE x; -- <b>"
    assert tickets.check_text("subject", text, 300) is text
    with pytest.raises(InvalidInput):
        tickets.check_text("subject", " \n ", 300)


def test_slugs_come_from_names_and_any_name_gives_a_valid_one():
    assert organizations.slug_from_name("Ünïcode Café & Co.") == "unicode-cafe-co"
    for name in ("'; DROP TABLE users; -- <script>", "ü", "!!!", "A" * 300):
        assert organizations.SLUG_PATTERN.match(organizations.slug_from_name(name)), name
    assert organizations.SLUG_PATTERN.match(organizations.with_suffix("x" * 63))
    with pytest.raises(InvalidInput):
        organizations.check_slug("Has Spaces")


def test_passwords_verify_and_ask_for_a_rehash_when_the_parameters_change():
    cheap = accounts.Passwords(time_cost=1, memory_kib=1024, parallelism=1)
    stored = cheap.hash("correct horse battery")
    assert cheap.verify(stored, "correct horse battery") == (True, False)
    assert cheap.verify(stored, "wrong") == (False, False)
    assert cheap.verify(None, "anything at all") == (False, False)  # no account: same answer
    stronger = accounts.Passwords(time_cost=2, memory_kib=1024, parallelism=1)
    assert stronger.verify(stored, "correct horse battery") == (True, True)
    with pytest.raises(InvalidInput):
        accounts.check_new_password("short")


def test_emails_compare_without_case_and_waiting_times_round_up():
    assert accounts.email_key("  Ann@Example.COM ") == "ann@example.com"
    with pytest.raises(InvalidInput):
        accounts.check_email("not-an-address")
    assert accounts.retry_after_seconds(NOW + timedelta(seconds=0.2), NOW) == 1
    assert accounts.retry_after_seconds(NOW + timedelta(seconds=1.5), NOW) == 2
    assert accounts.retry_after_seconds(NOW - timedelta(seconds=5), NOW) == 1
    assert accounts.tokens_match("abc", "abc") and not accounts.tokens_match("abc", None)


def test_the_schema_checks_name_the_same_plans_and_statuses_as_the_code():
    sql = next(m.sql for m in load_migrations("yggdrasil.central") if m.name == "portal")
    assert sql.startswith("-- 0003_portal.sql\n-- ")

    def check_list(column: str) -> set[str]:
        found = re.search(rf"{column}\s.*?CHECK \({column} IN \(([^)]*)\)\)", sql)
        assert found, column
        return set(re.findall(r"'([a-z_]+)'", found[1]))

    assert check_list("plan") == set(PLANS)
    assert check_list("role") == set(roles.ROLES)
    assert check_list("status") in (set(subscriptions.STATUSES), set(tickets.STATUSES))
    statuses = [set(re.findall(r"'([a-z_]+)'", m)) for m in re.findall(r"CHECK \(status IN \(([^)]*)\)\)", sql)]
    assert statuses == [set(subscriptions.STATUSES), set(tickets.STATUSES)]
