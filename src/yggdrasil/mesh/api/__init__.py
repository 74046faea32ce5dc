"""The mesh server's HTTP layer: app factory, routes, error mapping, metrics."""
