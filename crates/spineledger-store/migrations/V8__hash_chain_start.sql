-- Where the hash chain starts. Events recorded before V6 have no hashes; every event
-- after the last of them must have one. Without this mark a verifier could not tell an
-- old unhashed stream from one whose hashes were stripped.
CREATE TABLE hash_chain_start (
    -- The last position recorded without hashes (0: every event is hashed).
    unhashed_until bigint NOT NULL
);
INSERT INTO hash_chain_start
SELECT coalesce(max(position), 0) FROM events WHERE hash IS NULL;

CREATE TRIGGER hash_chain_start_immutable
    BEFORE UPDATE OR DELETE ON hash_chain_start
    FOR EACH ROW EXECUTE FUNCTION reject_event_mutation();
REVOKE ALL ON hash_chain_start FROM PUBLIC;
GRANT SELECT ON hash_chain_start TO spineledger_projector;
