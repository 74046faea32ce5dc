"""Route modules of the mesh server."""
