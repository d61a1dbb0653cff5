"""PostgreSQL shard adapters: the per-shard pool registry and sessions (``pool_*``) and the
resource SQL (``shard_store`` with ``resource_statements``, ``resource_errors``, the filter,
aggregate and statistics compilers).

``PoolRegistry`` implements the resources domain's ``ShardConnections`` port and ``ShardStore`` its
``ResourceStore`` port (``simplu_grpc/domain/resources/ports.py``); psycopg and psycopg_pool
exceptions are translated into ``simplu_grpc.errors`` here, a shard that cannot be connected to
being ``ShardUnreachable``.
"""
