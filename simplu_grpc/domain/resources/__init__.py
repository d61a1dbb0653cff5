"""The resources aggregate: model, catalog, validation, ids, page tokens, filters, aggregates,
statistics, the change log and the ResourceService use cases (``ops``); ``ports`` is what they
need from the shards."""
