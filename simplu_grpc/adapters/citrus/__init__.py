"""The Citrus shard-server adapter: HTTP client (client.py) and shard directories (shard_directory.py)."""
