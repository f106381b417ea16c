"""The SQLite implementation of the storage ports (all its SQL lives here)."""
