"""HTTP plumbing shared by Yggdrasil's three servers (tenant, mesh and portal): the error
envelope `{"error": {"code", "message"}}` and the handlers that answer with it, the request
middleware (request id, body size limit, access log, request metrics), the metrics registry it
records into, and the database pool each server's lifespan opens.

What differs between the servers is passed in (their metric prefix, their logger, their wording
of a database failure); what a client sees on the wire is the same for all three.
"""
