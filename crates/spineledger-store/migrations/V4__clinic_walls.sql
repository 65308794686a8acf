-- A second wall between clinics, inside PostgreSQL.
--
-- The service logs in as spineledger_app and the projector workers as
-- spineledger_projector. Neither owns anything; whoever runs the migrations owns every
-- table, function and sequence and stays the administrator (row-level security is not
-- forced on the owner: migrations and `spineledger rebuild` see every row).
--
-- Every clinical table (streams, events, treatment_plans, outcome_episodes) has
-- row-level security. The app role sees and writes only the rows of the clinics the
-- current transaction names in the setting `spineledger.clinic_ids` (the service sets
-- it with set_config(..., true), i.e. SET LOCAL: it ends with the transaction). No
-- setting, an empty one or another clinic's: no rows. The projector role folds every
-- clinic's events and is never reachable from a request: its policies let it see all.

-- The login roles. Roles are cluster-wide and several databases may migrate at once,
-- so each step tolerates a concurrent migrator doing the same. No password is set:
-- with trust, peer or certificate authentication they log in as they are; under
-- password authentication a role without a password cannot log in at all until an
-- operator gives it one (ALTER ROLE … PASSWORD).
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['spineledger_app', 'spineledger_projector'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format(
                    'CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                    'NOREPLICATION NOBYPASSRLS', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
        -- V1 created spineledger_app NOLOGIN (it was reached by SET ROLE).
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name AND rolcanlogin) THEN
            BEGIN
                EXECUTE format('ALTER ROLE %I LOGIN', role_name);
            EXCEPTION WHEN internal_error THEN
                -- "tuple concurrently updated": another database's migration altered
                -- the role first. Fine if it did what we wanted.
                IF NOT EXISTS (SELECT 1 FROM pg_roles
                               WHERE rolname = role_name AND rolcanlogin) THEN
                    RAISE;
                END IF;
            END;
        END IF;
    END LOOP;
END;
$$;

-- The clinics the current transaction works for: the setting as a uuid array; missing
-- or empty means none. STABLE and inlinable, so `clinic_id = ANY (…)` in a policy is
-- evaluated once per statement and can drive an index scan.
CREATE FUNCTION spineledger_clinic_ids() RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        string_to_array(nullif(current_setting('spineledger.clinic_ids', true), ''), ',')::uuid[],
        '{}'::uuid[])
$$;

-- Least privilege. The app role: append and read events (data columns only, from V1),
-- read and write streams, read the read models and the checkpoints read-your-writes
-- waits on. It no longer writes read models or projector bookkeeping.
REVOKE ALL ON projection_checkpoints, projection_leases, projector_workers,
              treatment_plans, outcome_episodes
    FROM spineledger_app;
GRANT SELECT ON projection_checkpoints TO spineledger_app;

-- The projector role: read the log, keep its bookkeeping. (Read-model grants are part
-- of protecting a read-model table, below.)
GRANT SELECT ON events, streams TO spineledger_projector;
GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO spineledger_projector;
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_leases, projector_workers
    TO spineledger_projector;

-- The log.
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_clinics ON events FOR ALL TO spineledger_app
    USING (clinic_id = ANY (spineledger_clinic_ids()))
    WITH CHECK (clinic_id = ANY (spineledger_clinic_ids()));
CREATE POLICY projector_all_clinics ON events FOR SELECT TO spineledger_projector
    USING (true);

ALTER TABLE streams ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_clinics ON streams FOR ALL TO spineledger_app
    USING (clinic_id = ANY (spineledger_clinic_ids()))
    WITH CHECK (clinic_id = ANY (spineledger_clinic_ids()));
CREATE POLICY projector_all_clinics ON streams FOR SELECT TO spineledger_projector
    USING (true);

-- Protecting a read-model table: row-level security, the two policies and the grants.
-- A rebuild creates its fresh table with CREATE TABLE … (LIKE … INCLUDING ALL), which
-- copies none of these, and calls this same function on it before the swap; one
-- definition, so the migration and the rebuild cannot drift apart. Only the owner of
-- the table can run it (ALTER TABLE needs ownership).
CREATE FUNCTION spineledger_protect_read_model(target regclass) RETURNS void
-- (Quiet: "policy does not exist, skipping" on a fresh table is no news.)
LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format('DROP POLICY IF EXISTS app_clinics ON %s', target);
    EXECUTE format(
        'CREATE POLICY app_clinics ON %s FOR SELECT TO spineledger_app '
        'USING (clinic_id = ANY (spineledger_clinic_ids()))', target);
    EXECUTE format('DROP POLICY IF EXISTS projector_all_clinics ON %s', target);
    EXECUTE format(
        'CREATE POLICY projector_all_clinics ON %s FOR ALL TO spineledger_projector '
        'USING (true) WITH CHECK (true)', target);
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, spineledger_app, spineledger_projector',
                   target);
    EXECUTE format('GRANT SELECT ON %s TO spineledger_app', target);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %s TO spineledger_projector', target);
END;
$$;
REVOKE ALL ON FUNCTION spineledger_protect_read_model(regclass) FROM PUBLIC;

SELECT spineledger_protect_read_model('treatment_plans');
SELECT spineledger_protect_read_model('outcome_episodes');

-- Statistics "over every clinic" (a request naming no clinic) need the clinics' ids
-- before the context can name them. This function returns only those ids (no clinical
-- data), runs as the owner, and is the app role's one way past the wall; a caller whose
-- clinics come from its credentials names them instead. Every clinic with an event has
-- a stream; a loose index scan over the key of streams finds them with one probe per
-- clinic, not a scan of every stream.
CREATE FUNCTION spineledger_known_clinics() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE clinic AS (
        (SELECT clinic_id FROM public.streams ORDER BY clinic_id LIMIT 1)
        UNION ALL
        SELECT (SELECT s.clinic_id FROM public.streams s
                WHERE s.clinic_id > clinic.clinic_id ORDER BY s.clinic_id LIMIT 1)
        FROM clinic WHERE clinic.clinic_id IS NOT NULL
    )
    SELECT clinic_id FROM clinic WHERE clinic_id IS NOT NULL
$$;
REVOKE ALL ON FUNCTION spineledger_known_clinics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spineledger_known_clinics() TO spineledger_app;
