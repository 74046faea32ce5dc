"""SQL against `ygg_central`: one module per concern, functions that take a psycopg connection."""
