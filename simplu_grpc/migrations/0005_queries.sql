-- Shard schema v5: indexes for ListResources filters (issue 12).
--
-- Text search: a bare search term or data.<key>:"text" is (data #>> '{key}') ILIKE '%text%';
-- a trigram GIN index on exactly that expression, partial to the resource type, serves it.
-- One index per field the catalog marks searchable (simplu_grpc/domain/catalog_fields.json;
-- a unit test checks that every searchable field has its index here). A field made
-- searchable later needs a new migration with its index.
--
-- pg_trgm: CREATE EXTENSION needs the CREATE privilege on the database (pg_trgm is a trusted
-- extension, so a superuser is not needed; the postgres superuser of the dev stack has it).
-- When the shard role lacks it, the migration run fails with InsufficientPrivilege and, as
-- every run is one transaction, applies nothing: the shard keeps its previous schema and the
-- error shows in ShardAdmin.MigrateShard / "simplu-grpc migrate". An operator then runs
-- "CREATE EXTENSION pg_trgm" once as a privileged role, and the next run migrates
-- (tests/integration/test_migration_pg_trgm.py).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX resources_search_patients_first_name ON resources USING gin ((data #>> '{first_name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'patients';
CREATE INDEX resources_search_patients_last_name ON resources USING gin ((data #>> '{last_name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'patients';
CREATE INDEX resources_search_patients_phone ON resources USING gin ((data #>> '{phone}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'patients';
CREATE INDEX resources_search_patients_email ON resources USING gin ((data #>> '{email}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'patients';
CREATE INDEX resources_search_clients_name ON resources USING gin ((data #>> '{name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'clients';
CREATE INDEX resources_search_clients_phone ON resources USING gin ((data #>> '{phone}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'clients';
CREATE INDEX resources_search_clients_email ON resources USING gin ((data #>> '{email}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'clients';
CREATE INDEX resources_search_members_first_name ON resources USING gin ((data #>> '{first_name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'members';
CREATE INDEX resources_search_members_last_name ON resources USING gin ((data #>> '{last_name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'members';
CREATE INDEX resources_search_members_phone ON resources USING gin ((data #>> '{phone}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'members';
CREATE INDEX resources_search_members_email ON resources USING gin ((data #>> '{email}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'members';
CREATE INDEX resources_search_guests_first_name ON resources USING gin ((data #>> '{first_name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'guests';
CREATE INDEX resources_search_guests_last_name ON resources USING gin ((data #>> '{last_name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'guests';
CREATE INDEX resources_search_guests_phone ON resources USING gin ((data #>> '{phone}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'guests';
CREATE INDEX resources_search_guests_email ON resources USING gin ((data #>> '{email}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'guests';
CREATE INDEX resources_search_staff_name ON resources USING gin ((data #>> '{name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'staff';
CREATE INDEX resources_search_staff_email ON resources USING gin ((data #>> '{email}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'staff';
CREATE INDEX resources_search_medics_name ON resources USING gin ((data #>> '{name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'medics';
CREATE INDEX resources_search_trainers_name ON resources USING gin ((data #>> '{name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'trainers';
CREATE INDEX resources_search_treatments_name ON resources USING gin ((data #>> '{name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'treatments';
CREATE INDEX resources_search_appointments_patient_name ON resources USING gin ((data #>> '{patient_name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'appointments';
CREATE INDEX resources_search_reservations_guest_name ON resources USING gin ((data #>> '{guest_name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'reservations';
CREATE INDEX resources_search_invoices_number ON resources USING gin ((data #>> '{number}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'invoices';
CREATE INDEX resources_search_invoices_client_name ON resources USING gin ((data #>> '{client_name}'::text[]) gin_trgm_ops)
    WHERE resource_type = 'invoices';

-- Time ranges: start_time already has (tenant, type, COALESCE(start_time, infinity), id) for
-- ordering and ranges; end_time, create_time and update_time get the same shape so range
-- filters and orderings on them are index scans within one tenant's type.
CREATE INDEX resources_by_end_time ON resources (
    business_id, location_id, resource_type, (COALESCE(end_time, 'infinity'::timestamptz)), resource_id
);
CREATE INDEX resources_by_create_time ON resources (
    business_id, location_id, resource_type, create_time, resource_id
);
