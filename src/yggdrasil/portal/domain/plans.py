"""The plan catalogue. Fixed in code (prices and limits change with a release, not at runtime);
0003_portal.sql's CHECK on portal_subscriptions.plan lists the same names."""

from __future__ import annotations

from dataclasses import dataclass

from yggdrasil.portal.errors import InvalidInput


@dataclass(frozen=True)
class Plan:
    name: str
    title: str
    max_seats: int
    monthly_price_per_seat_eur: int


PLANS: dict[str, Plan] = {
    plan.name: plan
    for plan in (
        Plan("starter", "Starter", max_seats=5, monthly_price_per_seat_eur=0),
        Plan("business", "Business", max_seats=50, monthly_price_per_seat_eur=29),
        Plan("enterprise", "Enterprise", max_seats=1000, monthly_price_per_seat_eur=49),
    )
}
DEFAULT_PLAN = "starter"


def plan_named(name: str) -> Plan:
    try:
        return PLANS[name]
    except KeyError:
        raise InvalidInput(f"unknown plan {name!r}; plans are: {', '.join(PLANS)}") from None
