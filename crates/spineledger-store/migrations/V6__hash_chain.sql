-- The hash chain of every stream (the encoding is documented in the store's chain.rs).
--
-- Each event stores the hash of its stream's previous event and its own; the stream row
-- keeps the head (its version and the last event's hash). The appending transaction
-- computes them under the stream lock it already holds, so writers of different streams
-- never wait for each other. Events recorded before this migration have no hashes: a
-- stream's chain starts at its first hashed event, from 32 zero bytes.

ALTER TABLE events
    ADD COLUMN prev_hash bytea CHECK (length(prev_hash) = 32),
    ADD COLUMN hash      bytea CHECK (length(hash) = 32);

ALTER TABLE streams
    ADD COLUMN head_hash bytea CHECK (length(head_hash) = 32);

-- The hash covers recorded_at, so the appending transaction must know it before it
-- inserts: the transaction's start time (which it reads with the stream lock) instead of
-- each statement's. Still a default only the database sets: the app role cannot insert
-- the column.
ALTER TABLE events ALTER COLUMN recorded_at SET DEFAULT transaction_timestamp();

GRANT INSERT (prev_hash, hash) ON events TO spineledger_app;
GRANT UPDATE (head_hash) ON streams TO spineledger_app;
