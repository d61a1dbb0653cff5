-- Shard schema v8: every change logged also wakes the change streams (WatchResources).
--
-- A trigger, not a call in each write statement: whatever writes resource_changes (today's
-- create, update and delete, and anything added later) notifies, and the write statements stay
-- as they are. The notification is only a wake-up: it carries the location ("business/location")
-- so a listener can skip locations nobody watches, never the change itself. Watchers read the
-- change from the log (adapters/change_listener.py), so a notification lost to a reconnect loses
-- nothing. PostgreSQL delivers it when the writing transaction commits, and drops it when the
-- transaction rolls back; identical notifications of one transaction are sent once.
CREATE FUNCTION simplu_notify_resource_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('simplu_resource_changes', NEW.business_id || '/' || NEW.location_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER resource_changes_notify
    AFTER INSERT ON resource_changes
    FOR EACH ROW EXECUTE FUNCTION simplu_notify_resource_change();
