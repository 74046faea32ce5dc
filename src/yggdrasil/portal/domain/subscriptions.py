"""A subscription's life: trial, paid periods, renewal, cancellation, and the seat limit.

Time moves a subscription on its own (a period that ends unrenewed makes it past due, a
cancellation at period end takes effect), so every operation first `settle`s it at `now`;
readers settle too, so a page never shows a state that has already lapsed.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from yggdrasil.portal.domain.plans import DEFAULT_PLAN, plan_named
from yggdrasil.portal.errors import Conflict, InvalidInput

STATUSES = ("trialing", "active", "past_due", "cancelled")
TRIAL_DAYS = 14


@dataclass(frozen=True)
class Subscription:
    plan: str
    seats: int
    status: str
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool = False
    cancelled_at: datetime | None = None


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later, clamped to the month's last day (31 Jan -> 28/29 Feb)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def start_trial(now: datetime, plan: str = DEFAULT_PLAN) -> Subscription:
    chosen = plan_named(plan)
    return Subscription(plan=chosen.name, seats=chosen.max_seats, status="trialing",
                        current_period_start=now, current_period_end=now + timedelta(days=TRIAL_DAYS))


def settle(sub: Subscription, now: datetime) -> Subscription:
    """Apply what time alone decides: a lapsed period is past due, or cancelled if asked for."""
    if sub.status == "cancelled" or now < sub.current_period_end:
        return sub
    if sub.cancel_at_period_end:
        return replace(sub, status="cancelled", cancelled_at=sub.current_period_end, cancel_at_period_end=False)
    if sub.status != "past_due":
        return replace(sub, status="past_due")
    return sub


def renew(sub: Subscription, now: datetime) -> Subscription:
    """Pay for the next period. A live subscription's period moves on by one month from where it
    ended (no days are lost or given away); a cancelled one starts afresh today."""
    sub = settle(sub, now)
    start = now if sub.status == "cancelled" else sub.current_period_end
    return replace(sub, status="active", current_period_start=start, current_period_end=add_months(start, 1),
                   cancel_at_period_end=False, cancelled_at=None)


def cancel(sub: Subscription, now: datetime, at_period_end: bool) -> Subscription:
    sub = settle(sub, now)
    if sub.status == "cancelled":
        raise Conflict("the subscription is already cancelled", code="subscription.cancelled")
    if at_period_end:
        return replace(sub, cancel_at_period_end=True)
    return replace(sub, status="cancelled", cancelled_at=now, current_period_end=max(now, sub.current_period_start),
                   cancel_at_period_end=False)


def change(sub: Subscription, now: datetime, members: int, plan: str | None = None,
           seats: int | None = None) -> Subscription:
    """Switch plan and/or seat count. Seats must fit the plan and the members already there.
    Moving to a plan without giving seats keeps the count, capped at the new plan's limit."""
    sub = settle(sub, now)
    if sub.status == "cancelled":
        raise Conflict("the subscription is cancelled; renew it before changing it", code="subscription.cancelled")
    chosen = plan_named(plan or sub.plan)
    new_seats = seats if seats is not None else min(sub.seats, chosen.max_seats)
    if new_seats < 1:
        raise InvalidInput("seats must be at least 1")
    if new_seats > chosen.max_seats:
        raise InvalidInput(f"the {chosen.name} plan has at most {chosen.max_seats} seats; asked for {new_seats}",
                           code="subscription.seats_over_plan")
    if new_seats < members:
        raise Conflict(f"the organization has {members} members; remove some before going down to {new_seats} seats",
                       code="subscription.seats_below_members")
    return replace(sub, plan=chosen.name, seats=new_seats)


def check_seat_free(sub: Subscription, now: datetime, members: int) -> None:
    """Raise Conflict unless one more member fits (and the subscription is not cancelled)."""
    sub = settle(sub, now)
    if sub.status == "cancelled":
        raise Conflict("the subscription is cancelled; renew it to add members", code="subscription.cancelled")
    if members >= sub.seats:
        raise Conflict(f"all {sub.seats} seats of the {sub.plan} plan are taken; add seats or change plan "
                       "before inviting more members", code="subscription.seat_limit")
