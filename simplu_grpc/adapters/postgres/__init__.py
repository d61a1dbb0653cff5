"""PostgreSQL shard adapters: the pool registry and shard sessions, the resource SQL, and the
ResourceOps shard port (``shard_port``)."""
