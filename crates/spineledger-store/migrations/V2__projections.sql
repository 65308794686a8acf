-- Projector bookkeeping and the read models.
--
-- A projection is split into shards of clinics; each (projection, shard) has a checkpoint
-- in the global order and a lease naming the worker that may advance it. A batch applies
-- events to the read model and advances the checkpoint in one transaction, with
-- compare-and-set on the old checkpoint and a check that the lease is still held.
-- (These bookkeeping tables are keyed by projection, not clinic: they hold no clinical
-- data. The read models are keyed by clinic like everything clinical.)

-- `shard_count` is part of the checkpoint: a worker configured with another count
-- cannot advance it (its compare-and-set names the count), and readers take the count
-- from here, so a partition is never read under another partitioning.
CREATE TABLE projection_checkpoints (
    projection  text        NOT NULL,
    shard       integer     NOT NULL CHECK (shard >= 0),
    shard_count integer     NOT NULL CHECK (shard_count BETWEEN 1 AND 255 AND shard < shard_count),
    xid         bigint      NOT NULL DEFAULT 0,
    position    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, shard)
);

CREATE TABLE projection_leases (
    projection text        NOT NULL,
    shard      integer     NOT NULL CHECK (shard >= 0),
    owner      uuid        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (projection, shard)
);

CREATE TABLE projector_workers (
    owner        uuid        PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL
);

-- The current treatment plan of each episode. `view` is the whole read model; the other
-- columns are the ones lists filter on.
CREATE TABLE treatment_plans (
    clinic_id        uuid        NOT NULL,
    episode_id       uuid        NOT NULL,
    phase            text        NOT NULL,
    next_session_due timestamptz,
    reassessment_due boolean     NOT NULL,
    view             jsonb       NOT NULL,
    PRIMARY KEY (clinic_id, episode_id)
);
CREATE INDEX treatment_plans_phase ON treatment_plans (clinic_id, phase, episode_id);

-- Per-episode outcome facts (no identifiable data) that statistics aggregate.
CREATE TABLE outcome_episodes (
    clinic_id    uuid        NOT NULL,
    episode_id   uuid        NOT NULL,
    evaluated_at timestamptz,
    facts        jsonb       NOT NULL,
    PRIMARY KEY (clinic_id, episode_id)
);
CREATE INDEX outcome_episodes_evaluated ON outcome_episodes (clinic_id, evaluated_at);

GRANT SELECT, INSERT, UPDATE, DELETE
    ON projection_checkpoints, projection_leases, projector_workers,
       treatment_plans, outcome_episodes
    TO spineledger_app;
