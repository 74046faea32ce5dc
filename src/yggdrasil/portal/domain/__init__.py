"""The portal's rules as plain data and functions: no database, no HTTP."""
