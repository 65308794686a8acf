-- Pre-aggregated outcome statistics. The outcome projector keeps, beside each episode's
-- facts (outcome_episodes), the exact tally of every cell: a clinic, the UTC month of
-- the first evaluation, and the values of the five non-clinic dimensions. A statistics
-- query sums cells instead of reading episodes. The tally is integer-only (see
-- spineledger-readmodels, tally.rs): counts, sums (NRS in points, ODI in nanopoints:
-- 1 point = 1e9) and a histogram of sessions to first response, so sums of cells are
-- exact and equal the aggregation of the same episodes.
--
-- `grouping` is a bit mask of the dimensions a row keeps, bit 0 diagnosis, 1 initial
-- sessions, 2 frequency phase, 3 adherence band, 4 age band. Rows are kept for 0 (the
-- clinic-month total), each single bit, and 31 (every dimension). A dimension a row does
-- not keep is NULL, as in SQL's GROUPING SETS; `evaluated_month` is NULL for episodes
-- without an evaluation. `cell` is the row's canonical key (month, grouping and values
-- as a JSON array), which the projector looks cells up by.
CREATE TABLE outcome_cells (
    clinic_id                    uuid     NOT NULL,
    cell                         text     NOT NULL,
    evaluated_month              date,
    grouping                     smallint NOT NULL,
    diagnosis                    text,
    initial_sessions             text,
    frequency_phase              text,
    adherence_band               text,
    age_band                     text,
    episodes                     bigint   NOT NULL,
    initial_phase_completed      bigint   NOT NULL,
    baseline_nrs_n               bigint   NOT NULL,
    baseline_nrs_sum             bigint   NOT NULL,
    baseline_odi_n               bigint   NOT NULL,
    baseline_odi_sum             bigint   NOT NULL,
    nrs_change_session_4_n       bigint   NOT NULL,
    nrs_change_session_4_sum     bigint   NOT NULL,
    nrs_change_session_6_n       bigint   NOT NULL,
    nrs_change_session_6_sum     bigint   NOT NULL,
    nrs_change_discharge_n       bigint   NOT NULL,
    nrs_change_discharge_sum     bigint   NOT NULL,
    odi_change_session_4_n       bigint   NOT NULL,
    odi_change_session_4_sum     bigint   NOT NULL,
    odi_change_session_6_n       bigint   NOT NULL,
    odi_change_session_6_sum     bigint   NOT NULL,
    odi_change_discharge_n       bigint   NOT NULL,
    odi_change_discharge_sum     bigint   NOT NULL,
    nrs_assessed                 bigint   NOT NULL,
    nrs_responders               bigint   NOT NULL,
    odi_assessed                 bigint   NOT NULL,
    odi_responders               bigint   NOT NULL,
    adherence_none_reported      bigint   NOT NULL,
    adherence_low                bigint   NOT NULL,
    adherence_moderate           bigint   NOT NULL,
    adherence_high               bigint   NOT NULL,
    missed_sessions              bigint   NOT NULL,
    adverse_events               bigint   NOT NULL,
    episodes_with_adverse_events bigint   NOT NULL,
    discharged_goals_met         bigint   NOT NULL,
    discharged_plateau           bigint   NOT NULL,
    discharged_self_discharge    bigint   NOT NULL,
    discharged_referred          bigint   NOT NULL,
    discharged_adverse_event     bigint   NOT NULL,
    discharged_lost_to_follow_up bigint   NOT NULL,
    ongoing                      bigint   NOT NULL,
    scores_corrected             bigint   NOT NULL,
    -- Element k+1: NRS responders whose first response came after k sessions.
    sessions_to_first_nrs_response bigint[] NOT NULL,
    -- Element s: episodes with a pre-session NRS at session s (1-12), and their sum.
    pain_before_n                bigint[] NOT NULL,
    pain_before_sum              bigint[] NOT NULL,
    PRIMARY KEY (clinic_id, cell),
    CHECK (episodes > 0)
);
CREATE INDEX outcome_cells_query ON outcome_cells (clinic_id, grouping, evaluated_month);

-- The projector removes a cell whose last episode moved out, so a rebuilt table equals
-- the incrementally kept one row for row: the read-model grants now include DELETE.
CREATE OR REPLACE FUNCTION spineledger_protect_read_model(target regclass) RETURNS void
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
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO spineledger_projector',
                   target);
END;
$$;
REVOKE ALL ON FUNCTION spineledger_protect_read_model(regclass) FROM PUBLIC;

SELECT spineledger_protect_read_model('treatment_plans');
SELECT spineledger_protect_read_model('outcome_episodes');
SELECT spineledger_protect_read_model('outcome_cells');

-- The cells start empty: the outcome projection starts again from the beginning of the
-- log, so episodes and cells are built together and agree.
TRUNCATE outcome_episodes;
DELETE FROM projection_checkpoints WHERE projection = 'outcome_statistics';
