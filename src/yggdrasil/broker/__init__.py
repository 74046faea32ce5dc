"""NATS JetStream as the transport between tenants: subject names, stream and consumer
declarations, and per-tenant permissions. Imports nothing else of ours but yggdrasil.broker."""
