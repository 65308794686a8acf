-- A checkpoint row is identified by its note, not by its size and root: a row written
-- past the service with the right size and root but a note nobody signed must not keep
-- the signed note out (an INSERT ... ON CONFLICT DO NOTHING would have skipped it).
ALTER TABLE log_checkpoints DROP CONSTRAINT log_checkpoints_pkey;
-- md5 only as a compact, immutable key for the note text (an index expression must be
-- immutable, which convert_to is not); a note's authenticity is its signature, checked by
-- every reader, never this digest.
CREATE UNIQUE INDEX log_checkpoints_note
    ON log_checkpoints (clinic_id, tree_size, md5(note));
CREATE INDEX log_checkpoints_size ON log_checkpoints (clinic_id, tree_size DESC);
