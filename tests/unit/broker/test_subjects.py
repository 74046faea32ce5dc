import pytest

from yggdrasil.broker.subjects import (
    MODULES,
    EventSubject,
    InvalidSubject,
    event_subject,
    inbound_filter,
    module_subjects,
    outbound_pattern,
    parse_event_subject,
    validate_tenant_id,
)
from yggdrasil.events.catalogue import CATALOGUE

pytestmark = pytest.mark.unit


def test_event_subject_names_module_then_destination_then_source():
    assert event_subject("sales", "bravo-buyer", "acme-seller") == "ygg.events.sales.bravo-buyer.acme-seller"


def test_parsing_an_event_subject_gives_back_its_parts():
    subject = event_subject("purchasing", "acme-seller", "bravo-buyer")
    assert parse_event_subject(subject) == EventSubject("purchasing", "acme-seller", "bravo-buyer")
    assert str(parse_event_subject(subject)) == subject


@pytest.mark.parametrize("subject", [
    "ygg.events.sales.bravo", "ygg.events.sales.bravo.acme.extra", "other.events.sales.bravo.acme",
    "ygg.events.billing.bravo.acme", "ygg.events.sales.Bravo.acme", "ygg.events.sales.*.acme", "",
])
def test_anything_else_is_not_an_event_subject(subject):
    with pytest.raises(InvalidSubject):
        parse_event_subject(subject)


@pytest.mark.parametrize("tenant", ["acme", "bravo-buyer", "c1", "a" + "b" * 62])
def test_valid_tenant_ids(tenant):
    assert validate_tenant_id(tenant) == tenant


@pytest.mark.parametrize("tenant", ["a", "Acme", "1acme", "acme.seller", "acme*", "acme>", "acme seller",
                                    "acme_seller", "a" + "b" * 63, ""])
def test_tenant_ids_that_could_break_a_subject_are_refused(tenant):
    with pytest.raises(InvalidSubject):
        event_subject("sales", tenant, "acme")


def test_unknown_module_is_refused():
    with pytest.raises(InvalidSubject):
        event_subject("billing", "bravo", "acme")


def test_filters_and_patterns_match_the_subject_layout():
    assert module_subjects("b2b") == "ygg.events.b2b.>"
    assert inbound_filter("sales", "bravo") == "ygg.events.sales.bravo.*"
    assert outbound_pattern("acme") == "ygg.events.*.*.acme"


def test_every_catalogue_module_has_a_stream():
    assert {event.module for event in CATALOGUE.values()} == set(MODULES)
