"""The on-disk format: the only code that knows paths, column names and manifest keys (see
docs/architecture.md)."""
