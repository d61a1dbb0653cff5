"""PostgreSQL adapters: psycopg and psycopg_pool live here and nowhere else."""
