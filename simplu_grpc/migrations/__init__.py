"""Versioned SQL migrations for the shard schema, applied in file-name order."""
