"""The mesh's rules as plain data and functions: no SQL, no HTTP."""
