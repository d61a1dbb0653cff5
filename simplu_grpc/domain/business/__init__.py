"""The business aggregate: model, validation, use cases, Citrus bookkeeping, cache and ports."""
