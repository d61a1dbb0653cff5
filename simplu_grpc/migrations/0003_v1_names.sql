-- Shard schema v3: the v1 contract's names. The resource *type* column is resource_type (it
-- was resource_name) and the instants are start_time / end_time (they were start_date /
-- end_date). Renames touch only the catalog: no table rewrite, no index rebuild.
ALTER TABLE resources RENAME COLUMN resource_name TO resource_type;
ALTER TABLE resources RENAME COLUMN start_date TO start_time;
ALTER TABLE resources RENAME COLUMN end_date TO end_time;
ALTER TABLE request_ids RENAME COLUMN resource_name TO resource_type;
ALTER INDEX resources_by_start_date RENAME TO resources_by_start_time;
