-- The event log: the only source of truth. One row per event, append-only.
--
-- Keys start with clinic_id so the schema distributes by clinic (Citus-style) without
-- redesign. Global order is (xid, position): `position` comes from a sequence taken at
-- insert time, `xid` is the writing transaction (xid8). Readers only take events whose
-- transaction is older than the oldest transaction still running, so a reader never
-- skips an event that commits late with a smaller position.

CREATE SEQUENCE event_position AS bigint START WITH 1 CACHE 1;

CREATE TABLE streams (
    clinic_id  uuid   NOT NULL,
    stream_id  text   NOT NULL,
    version    bigint NOT NULL CHECK (version >= 0),
    PRIMARY KEY (clinic_id, stream_id)
);

CREATE TABLE events (
    clinic_id      uuid        NOT NULL,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL CHECK (length(event_type) BETWEEN 1 AND 100),
    schema_version integer     NOT NULL CHECK (schema_version >= 1),
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    -- SHA-256 of what the writer asked for (the command), compared on retries:
    -- same id and same fingerprint is a retry, same id and another fingerprint an error.
    fingerprint    bytea       NOT NULL CHECK (length(fingerprint) = 32),
    occurred_at    timestamptz,
    recorded_at    timestamptz NOT NULL DEFAULT statement_timestamp(),
    xid            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    position       bigint      NOT NULL DEFAULT nextval('event_position'),
    PRIMARY KEY (clinic_id, stream_id, version),
    FOREIGN KEY (clinic_id, stream_id) REFERENCES streams (clinic_id, stream_id)
);

-- The command id is the event id: one event per id within a clinic.
CREATE UNIQUE INDEX events_event_id ON events (clinic_id, event_id);
-- Global order for readers ("all events after cursor").
CREATE INDEX events_global_order ON events (xid, position);
-- "At least position P" lookups for read-your-writes.
CREATE INDEX events_position ON events (position);

-- Immutability: no UPDATE, DELETE or TRUNCATE. Grants are the first wall (the app role
-- may only insert and read); this trigger the second: it stops the owner and superusers
-- too, unless they deliberately disable it (ALTER TABLE … DISABLE TRIGGER, or
-- session_replication_role), which only an administrator can and an audit would show.
CREATE FUNCTION reject_event_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on events is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_immutable_rows
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION reject_event_mutation();

CREATE TRIGGER events_immutable_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION reject_event_mutation();

-- The role the service runs as after migrating (SET ROLE on every pooled connection).
-- Roles are cluster-wide; several databases may migrate at once, so creation tolerates
-- a concurrent creator.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'spineledger_app') THEN
        BEGIN
            CREATE ROLE spineledger_app NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END;
$$;

REVOKE ALL ON events, streams FROM PUBLIC;
-- The app role may insert only the data columns: xid, position and recorded_at always
-- come from their defaults, so no writer can place an event behind readers' cursors or
-- back-date its recording.
GRANT SELECT ON events TO spineledger_app;
GRANT INSERT (clinic_id, stream_id, version, event_id, event_type, schema_version, payload,
              metadata, fingerprint, occurred_at)
    ON events TO spineledger_app;
GRANT SELECT, INSERT, UPDATE ON streams TO spineledger_app;
GRANT USAGE ON SEQUENCE event_position TO spineledger_app;
