"""Moving a location between shards online (issue 13): model, ports, engine, use cases, runner."""
