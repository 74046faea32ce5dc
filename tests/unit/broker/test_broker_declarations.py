import pytest
from nats.js.api import StorageType

from yggdrasil.broker.permissions import inbox_prefix, render_auth_config, tenant_permissions
from yggdrasil.broker.streams import (
    DEFAULT_MAX_AGE,
    consumer_spec,
    declared_consumers,
    declared_streams,
    stream_config,
)

pytestmark = pytest.mark.unit


def test_one_file_stream_per_module_keeps_events_seven_days():
    streams = declared_streams()
    assert [(s.name, s.subjects) for s in streams] == [
        ("YGG_SALES", ["ygg.events.sales.>"]),
        ("YGG_PURCHASING", ["ygg.events.purchasing.>"]),
        ("YGG_B2B", ["ygg.events.b2b.>"]),
    ]
    assert all(s.storage == StorageType.FILE and s.max_age == DEFAULT_MAX_AGE == 7 * 86400 for s in streams)


def test_duplicate_window_is_far_longer_than_the_two_minute_default():
    assert stream_config("sales").duplicate_window >= 3600


def test_duplicate_window_never_exceeds_a_short_retention():
    assert stream_config("sales", max_age=5).duplicate_window == 5


def test_consumer_reads_only_events_addressed_to_its_tenant():
    spec = consumer_spec("bravo", "sales", ack_wait=10, max_ack_pending=50)
    assert spec.stream == "YGG_SALES"
    assert spec.durable == spec.config.name == "ygg-bravo-sales"
    assert spec.config.filter_subject == "ygg.events.sales.bravo.*"
    assert (spec.config.ack_wait, spec.config.max_ack_pending) == (10, 50)


def test_every_tenant_gets_a_consumer_per_module():
    assert len(declared_consumers(["acme", "bravo"])) == 6


def test_tenant_publishes_only_as_itself():
    allowed = tenant_permissions("acme")["publish"]["allow"]
    event_subjects = [s for s in allowed if s.startswith("ygg.")]
    assert event_subjects == ["ygg.events.*.*.acme"]


def test_tenant_may_create_only_its_own_filtered_consumers():
    allowed = tenant_permissions("acme")["publish"]["allow"]
    creates = [s for s in allowed if s.startswith("$JS.API.CONSUMER.CREATE.")]
    assert creates == [
        "$JS.API.CONSUMER.CREATE.YGG_SALES.ygg-acme-sales.ygg.events.sales.acme.*",
        "$JS.API.CONSUMER.CREATE.YGG_PURCHASING.ygg-acme-purchasing.ygg.events.purchasing.acme.*",
        "$JS.API.CONSUMER.CREATE.YGG_B2B.ygg-acme-b2b.ygg.events.b2b.acme.*",
    ]
    # The legacy durable-create subject carries no filter; stream admin is not the tenant's.
    assert not [s for s in allowed if ".DURABLE." in s or ".STREAM." in s]


def test_tenant_subscribes_only_to_its_inbox_and_its_mail():
    assert tenant_permissions("acme")["subscribe"]["allow"] == [
        "_INBOX.acme.>", "ygg.events.sales.acme.*", "ygg.events.purchasing.acme.*", "ygg.events.b2b.acme.*",
    ]
    assert inbox_prefix("acme") == "_INBOX.acme"


def test_auth_config_quotes_jetstream_subjects():
    config = render_auth_config({"acme": "pw"}, admin_password="admin-pw")
    assert '"$JS.ACK.YGG_SALES.ygg-acme-sales.>"' in config
    assert '"user": "ygg_admin"' in config
