-- Each clinic's verifiable log: the dense index the integrator gives the clinic's records
-- (events, and entries of the access log) in the order it reads them, the RFC 9162 Merkle
-- tree over their hashes that this index defines, and the signed checkpoints of that
-- tree. The tree itself is not stored: it is a function of the leaves, computed where a
-- root or a proof is needed (spineledger-verifier's merkle.rs).

-- The access log is read in commit order like the events (the never-skip rule needs each
-- entry's transaction id).
ALTER TABLE access_log ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX access_log_commit_order ON access_log (xid, position);

CREATE TABLE clinic_log (
    clinic_id  uuid        NOT NULL,
    leaf_index bigint      NOT NULL CHECK (leaf_index >= 0),
    -- What the leaf stands for: an event (by global position) or an access-log entry (by
    -- its position in the access log).
    kind       text        NOT NULL CHECK (kind IN ('event', 'access')),
    position   bigint      NOT NULL,
    -- The record's hash when it was indexed.
    leaf_hash  bytea       NOT NULL CHECK (length(leaf_hash) = 32),
    indexed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (clinic_id, leaf_index),
    UNIQUE (clinic_id, kind, position)
);

-- How far the integrator has read the access log, per shard of clinics (its place in the
-- event log is its projection checkpoint, like every projector's).
CREATE TABLE clinic_log_access_cursors (
    shard       integer NOT NULL PRIMARY KEY,
    shard_count integer NOT NULL,
    xid         bigint  NOT NULL DEFAULT 0,
    position    bigint  NOT NULL DEFAULT 0
);

-- Signed checkpoints. The key that signs them is not in the database; a note is checked
-- with the public key alone. Several rows of one size are allowed on purpose: should two
-- ever disagree, the verifier must see both (a fork), not have one refused here.
CREATE TABLE log_checkpoints (
    clinic_id uuid        NOT NULL,
    tree_size bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash bytea       NOT NULL CHECK (length(root_hash) = 32),
    note      text        NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (clinic_id, tree_size, root_hash)
);

-- Append-only, like the events.
CREATE TRIGGER clinic_log_immutable_rows
    BEFORE UPDATE OR DELETE ON clinic_log
    FOR EACH ROW EXECUTE FUNCTION reject_event_mutation();
CREATE TRIGGER clinic_log_immutable_truncate
    BEFORE TRUNCATE ON clinic_log
    FOR EACH STATEMENT EXECUTE FUNCTION reject_event_mutation();
CREATE TRIGGER log_checkpoints_immutable_rows
    BEFORE UPDATE OR DELETE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION reject_event_mutation();
CREATE TRIGGER log_checkpoints_immutable_truncate
    BEFORE TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION reject_event_mutation();

REVOKE ALL ON clinic_log, clinic_log_access_cursors, log_checkpoints FROM PUBLIC;
ALTER TABLE clinic_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE log_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE clinic_log_access_cursors ENABLE ROW LEVEL SECURITY;

-- The service proves inclusion and consistency for its clinics, and signs a checkpoint on
-- an auditor's demand.
CREATE POLICY app_clinics ON clinic_log FOR SELECT TO spineledger_app
    USING (clinic_id = ANY (spineledger_clinic_ids()));
CREATE POLICY app_clinics ON log_checkpoints FOR ALL TO spineledger_app
    USING (clinic_id = ANY (spineledger_clinic_ids()))
    WITH CHECK (clinic_id = ANY (spineledger_clinic_ids()));
GRANT SELECT ON clinic_log TO spineledger_app;
GRANT SELECT ON log_checkpoints TO spineledger_app;
GRANT INSERT (clinic_id, tree_size, root_hash, note) ON log_checkpoints TO spineledger_app;

-- The integrator (the projector role) indexes every clinic and signs at its interval.
CREATE POLICY projector_all_clinics ON clinic_log FOR ALL TO spineledger_projector
    USING (true) WITH CHECK (true);
CREATE POLICY projector_all_clinics ON log_checkpoints FOR ALL TO spineledger_projector
    USING (true) WITH CHECK (true);
CREATE POLICY projector_all_shards ON clinic_log_access_cursors FOR ALL
    TO spineledger_projector USING (true) WITH CHECK (true);
CREATE POLICY projector_all_clinics ON access_log FOR SELECT TO spineledger_projector
    USING (true);
GRANT SELECT, INSERT ON clinic_log TO spineledger_projector;
GRANT SELECT, INSERT ON log_checkpoints TO spineledger_projector;
GRANT SELECT, INSERT, UPDATE ON clinic_log_access_cursors TO spineledger_projector;
GRANT SELECT ON access_log TO spineledger_projector;
