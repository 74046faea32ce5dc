"""The portal's HTTP side: JSON API under /api/v1, server-rendered pages, /health, /metrics."""
