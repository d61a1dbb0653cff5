"""ShardAdmin use cases and the admin aggregate's ports."""
