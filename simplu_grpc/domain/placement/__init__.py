"""Where tenants live: shard assignments (shards.py) and the routing cache (routing.py)."""
