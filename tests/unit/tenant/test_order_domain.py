"""Sales and purchase orders as plain objects: transitions, editing, lines, totals, events."""

import re
from decimal import Decimal
from importlib import resources

import pytest

from yggdrasil.tenant import errors
from yggdrasil.tenant.domain import events, purchasing, sales
from yggdrasil.tenant.domain.orders import OrderLine
from yggdrasil.tenant.domain.purchasing import PurchaseOrder
from yggdrasil.tenant.domain.sales import SalesOrder

pytestmark = pytest.mark.unit


def clock(quantity="3", price="24.90") -> OrderLine:
    return OrderLine(item_id=101, quantity=Decimal(quantity), unit_price=Decimal(price))


def sales_order(state="draft", order_id=7) -> SalesOrder:
    return SalesOrder(id=order_id, customer_id=1, warehouse_id=2, lines=[clock()], state=state)


def purchase_order(state="draft", order_id=8) -> PurchaseOrder:
    return PurchaseOrder(id=order_id, supplier_id=1, warehouse_id=2, lines=[clock()], state=state)


ACTIONS = {"confirmed": "confirm", "shipped": "ship", "received": "receive", "cancelled": "cancel"}


@pytest.mark.parametrize("make, transitions, all_states", [
    (sales_order, sales.TRANSITIONS, sales.STATES),
    (purchase_order, purchasing.TRANSITIONS, purchasing.STATES),
])
def test_every_declared_transition_is_allowed_and_every_other_is_refused_with_a_message(make, transitions, all_states):
    for source in all_states:
        for target in all_states:
            if target == "draft":
                continue  # there is no action that returns an order to draft
            order = make(state=source)
            act = getattr(order, ACTIONS[target])
            if (source, target) in transitions:
                act()
                assert order.state == target
                assert [e.name for e in order.events] == [f"{order.EVENTS[target].name}"]
            else:
                with pytest.raises(errors.InvalidTransition) as refused:
                    act()
                assert str(refused.value) == f"{order.KIND} {order.id} is {source} and cannot be {target}"
                assert order.state == source and order.events == []


def test_a_shipped_sales_order_cannot_be_cancelled():
    order = sales_order("shipped")
    with pytest.raises(errors.InvalidTransition, match=r"^sales order 7 is shipped and cannot be cancelled$"):
        order.cancel()


def test_confirming_then_shipping_records_events_with_wire_names():
    order = sales_order()
    order.confirm()
    order.ship()
    assert order.events == [events.SalesOrderConfirmed(order_id=7), events.SalesOrderShipped(order_id=7)]
    assert [e.name for e in order.pop_events()] == ["sales.order.confirmed", "sales.order.shipped"]
    assert order.events == []


def test_receiving_a_confirmed_purchase_order_records_purchasing_order_received():
    order = purchase_order("confirmed")
    order.receive()
    assert order.events == [events.PurchaseOrderReceived(order_id=8)]
    assert order.events[0].name == "purchasing.order.received"


def test_a_new_order_is_a_draft_and_is_recorded_as_created_once_it_has_an_id():
    order = SalesOrder.new(customer_id=1, warehouse_id=2, lines=[clock(), clock("1", "5")])
    assert order.state == "draft" and order.id is None and order.events == []
    assert [line.line_no for line in order.lines] == [1, 2]
    with pytest.raises(ValueError):
        order.record_created()
    order.id = 11
    order.record_created()
    assert order.events == [events.SalesOrderCreated(order_id=11)]
    assert order.events[0].name == "sales.order.created"


def test_an_order_needs_at_least_one_line():
    with pytest.raises(errors.InvalidInput) as refused:
        SalesOrder.new(customer_id=1, warehouse_id=2, lines=[])
    assert refused.value.message_id == "order.no_lines"
    with pytest.raises(errors.InvalidInput, match="at least one line"):
        sales_order().edit(lines=[])


@pytest.mark.parametrize("line, problem", [
    (clock(quantity="0"), "line 1: quantity must be greater than 0"),
    (clock(quantity="-1"), "line 1: quantity must be greater than 0"),
    (clock(price="-0.01"), "line 1: unit_price must not be negative"),
    (clock(quantity="1.0001"), "line 1: quantity has more than 3 decimals"),
    (clock(price="1.00001"), "line 1: unit_price has more than 4 decimals"),
])
def test_bad_lines_are_refused(line, problem):
    with pytest.raises(errors.InvalidInput, match=f"^{re.escape(problem)}$"):
        PurchaseOrder.new(supplier_id=1, warehouse_id=2, lines=[line])


def test_totals_are_line_quantity_times_price_rounded_to_four_decimals():
    order = SalesOrder.new(customer_id=1, warehouse_id=2,
                           lines=[clock("3", "24.90"), clock("0.333", "0.3333"), clock("2", "0")])
    assert [line.total for line in order.lines] == [Decimal("74.7000"), Decimal("0.1110"), Decimal("0.0000")]
    assert order.total == Decimal("74.8110")


def test_a_draft_is_edited_and_records_sales_order_updated():
    order = sales_order()
    assert order.edit(reference="PO-BRAVO-2", lines=[clock("1", "5"), clock("2", "6")]) is True
    assert order.reference == "PO-BRAVO-2" and order.total == Decimal("17")
    assert order.events == [events.SalesOrderUpdated(order_id=7)]
    assert order.events[0].name == "sales.order.updated"


def test_an_empty_edit_changes_nothing_and_records_nothing():
    order = purchase_order()
    assert order.edit() is False
    assert order.events == []


@pytest.mark.parametrize("make, state", [
    (sales_order, "confirmed"), (sales_order, "shipped"), (sales_order, "cancelled"),
    (purchase_order, "confirmed"), (purchase_order, "received"), (purchase_order, "cancelled"),
])
def test_editing_outside_draft_is_refused(make, state):
    order = make(state=state)
    with pytest.raises(errors.NotEditable) as refused:
        order.edit(notes="too late")
    assert str(refused.value) == f"{order.KIND} {order.id} is {state}; only draft orders can be edited"
    assert order.notes == "" and order.events == []


def test_fields_outside_the_editable_set_cannot_be_edited():
    with pytest.raises(ValueError, match="state"):
        sales_order().edit(state="shipped")
    with pytest.raises(ValueError, match="b2b_source_tenant"):
        purchase_order().edit(b2b_source_tenant="evil")


def test_a_stale_version_is_refused_and_none_means_any():
    order = sales_order()
    order.version = 3
    order.check_version(None)
    order.check_version(3)
    with pytest.raises(errors.StaleVersion, match="you sent version 2, it is now at version 3"):
        order.check_version(2)


# -- conformance ------------------------------------------------------------------------------


def _sql_state_checks() -> dict[str, set[str]]:
    """table -> the states its CHECK constraint allows, read from the migration text."""
    text = resources.files("yggdrasil.tenant").joinpath("migrations/0001_core.sql").read_text()
    found = {}
    for table, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", text, flags=re.S):
        check = re.search(r"\bstate\b[^,]*?CHECK \(state IN \(([^)]*)\)\)", body, flags=re.S)
        if check:
            found[table] = set(re.findall(r"'(\w+)'", check.group(1)))
    return found


def _sql_guard_transitions() -> dict[str, set[tuple[str, str]]]:
    """table -> the transitions the order_state_guard trigger admits."""
    text = resources.files("yggdrasil.tenant").joinpath("migrations/0001_core.sql").read_text()
    found = {}
    for table, pairs in re.findall(r"TG_TABLE_NAME = '(\w+)' AND \(OLD\.state, NEW\.state\) IN \((.*?)\)\)", text, flags=re.S):
        found[table] = set(re.findall(r"\('(\w+)', '(\w+)'", pairs))
    return found


@pytest.mark.parametrize("table, module, order_type", [
    ("crm_sales_orders", sales, SalesOrder),
    ("purchasing_orders", purchasing, PurchaseOrder),
])
def test_domain_states_and_transitions_match_the_database(table, module, order_type):
    states_in_sql = _sql_state_checks()[table]
    states_in_transitions = {state for pair in module.TRANSITIONS for state in pair}
    assert states_in_transitions == states_in_sql == set(module.STATES)
    assert _sql_guard_transitions()[table] == set(module.TRANSITIONS)
    assert order_type.TRANSITIONS is module.TRANSITIONS


@pytest.mark.parametrize("order_type, module", [(SalesOrder, "sales"), (PurchaseOrder, "purchasing")])
def test_every_order_event_has_a_wire_name_for_its_module(order_type, module):
    expected = {"created", "updated"} | {target for _, target in order_type.TRANSITIONS}
    assert set(order_type.EVENTS) == expected
    for verb, event_type in order_type.EVENTS.items():
        assert event_type.name == f"{module}.order.{verb}"
        assert issubclass(event_type, events.OrderEvent)
