-- The access log: who read which patient's records, when, why, and what they were shown.
--
-- One row per episode shown by a read of episode data (a plan, a list of plans, a
-- stream's history, an as-of replay, a clinic's changes). Append-only under the same
-- guard as the events (no UPDATE, DELETE or TRUNCATE, for anyone, unless an
-- administrator disables the trigger, which an audit would show), and walled by clinic
-- like every clinical table: the service writes and reads only the clinics its
-- transaction names.

CREATE SEQUENCE access_log_position AS bigint START WITH 1 CACHE 1;

CREATE TABLE access_log (
    clinic_id         uuid        NOT NULL,
    position          bigint      NOT NULL DEFAULT nextval('access_log_position'),
    accessed_at       timestamptz NOT NULL DEFAULT transaction_timestamp(),
    -- Who: the authenticated principal, and the user an integration says it acts for.
    principal_subject text        NOT NULL,
    principal_issuer  text        NOT NULL,
    principal_role    text        NOT NULL,
    actor             text,
    -- What: the RPC, the patient and episode shown, the log position the answer reflects.
    rpc               text        NOT NULL,
    patient_id        uuid,
    episode_id        uuid,
    shown_position    bigint,
    -- Why: the purpose of use the caller declared (HL7 PurposeOfUse code), and whether it
    -- invoked emergency access ("break the glass").
    purpose           text,
    break_glass       boolean     NOT NULL DEFAULT false,
    -- The outcome: OK, or the status code of a read that showed nothing.
    outcome           text        NOT NULL,
    PRIMARY KEY (clinic_id, position)
);
CREATE INDEX access_log_patient ON access_log (clinic_id, patient_id, position);
CREATE INDEX access_log_time ON access_log (clinic_id, accessed_at, position);

CREATE TRIGGER access_log_immutable_rows
    BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION reject_event_mutation();
CREATE TRIGGER access_log_immutable_truncate
    BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION reject_event_mutation();

REVOKE ALL ON access_log FROM PUBLIC;
ALTER TABLE access_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_clinics ON access_log FOR ALL TO spineledger_app
    USING (clinic_id = ANY (spineledger_clinic_ids()))
    WITH CHECK (clinic_id = ANY (spineledger_clinic_ids()));
-- Position and time always come from their defaults.
GRANT SELECT ON access_log TO spineledger_app;
GRANT INSERT (clinic_id, principal_subject, principal_issuer, principal_role, actor, rpc,
              patient_id, episode_id, shown_position, purpose, break_glass, outcome)
    ON access_log TO spineledger_app;
GRANT USAGE ON SEQUENCE access_log_position TO spineledger_app;
