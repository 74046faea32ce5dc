"""The sidecar: publishes the tenant's outbox to the broker and applies inbound events.

`publisher.py` claims pending `b2b_events` rows and publishes them; `relay.py` pulls events
addressed to this tenant, checks them and applies them (`orders.py`, `receipts.py`) in one
transaction per batch; `sidecar.py` runs both against one broker connection and reconnects.
"""
