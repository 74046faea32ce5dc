"""The dev stack: embedded PostgreSQL and nats-server on 127.0.0.1, and `ygg demo`."""
