-- SQL for analysts' own tools (psql, pandas, Metabase, Superset, Power BI, DuckDB).
--
-- A login role, spineledger_analyst, sees one schema, `analytics`: views and a function
-- over the released parts of the pre-aggregated outcome statistics (outcome_cells), of
-- the clinics granted to the login in analyst_grants, and nothing else: no events, no
-- episode rows, no free text, no withheld part. The release is the API's, part by part
-- (spineledger-readmodels, release.rs): a part is one clinic's episodes first evaluated
-- in one UTC month, in the clinic-month total or in one value of one dimension; a part
-- of fewer than k episodes is withheld, and within a clinic-month and dimension the
-- smallest parts are withheld with it until the withheld ones hold at least k. For one
-- dimension that is the shortest run of parts, smallest first (ties by value in byte
-- order), that takes in every small part and holds at least k episodes besides no_plan
-- (which is chosen last); no_plan, shared by two dimensions, is withheld by both or
-- neither. A test compares these figures with the API's.
--
-- The wall is row-level security: the views belong to spineledger_analytics, a role
-- that cannot log in, reads outcome_cells under a policy admitting the clinics granted
-- to the session's login (session_user), and is the only way the analyst reaches them.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['spineledger_analyst', 'spineledger_analytics'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                -- NOLOGIN: an operator lets the analyst in with
                -- ALTER ROLE spineledger_analyst LOGIN PASSWORD '…' (see the README).
                EXECUTE format(
                    'CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                    'NOREPLICATION NOBYPASSRLS', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END;
$$;

-- The migrator hands the analysts' views to spineledger_analytics below, which takes
-- membership (a superuser has it already).
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'spineledger_analytics', 'MEMBER') THEN
        EXECUTE format('GRANT spineledger_analytics TO %I', current_user);
    END IF;
END;
$$;

-- k, as the server's --min-cell (8 unless changed; never below 3).
CREATE TABLE statistics_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    min_cell  integer NOT NULL CHECK (min_cell >= 3)
);
INSERT INTO statistics_settings (min_cell) VALUES (8);

-- Which clinics each analyst login sees. Kept by the owner (the operator).
CREATE TABLE analyst_grants (
    login     name NOT NULL,
    clinic_id uuid NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (login, clinic_id)
);

-- The clinics granted to the session's login; runs as the owner, returns ids only.
CREATE FUNCTION spineledger_analyst_clinics() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(clinic_id), '{}'::uuid[])
    FROM public.analyst_grants WHERE login = session_user
$$;
REVOKE ALL ON FUNCTION spineledger_analyst_clinics() FROM PUBLIC;
-- Granted to the analyst as well, so that it may learn its own grants.
GRANT EXECUTE ON FUNCTION spineledger_analyst_clinics()
    TO spineledger_analytics, spineledger_analyst;

GRANT SELECT ON statistics_settings TO spineledger_analytics;

-- The wall of a read-model table, as V11 built it, plus, for the outcome cells (live,
-- or a rebuild's fresh copy `outcome_cells_rebuild`, which is swapped in), the
-- analytics role's read of the granted clinics' rows.
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
    IF (SELECT relname FROM pg_class WHERE oid = target)
           IN ('outcome_cells', 'outcome_cells_rebuild') THEN
        EXECUTE format('DROP POLICY IF EXISTS analyst_clinics ON %s', target);
        EXECUTE format(
            'CREATE POLICY analyst_clinics ON %s FOR SELECT TO spineledger_analytics '
            'USING (clinic_id = ANY (spineledger_analyst_clinics()))', target);
        EXECUTE format('GRANT SELECT ON %s TO spineledger_analytics', target);
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION spineledger_protect_read_model(regclass) FROM PUBLIC;
SELECT spineledger_protect_read_model('outcome_cells');

-- Every part of the granted clinics with its release decision: internal, for the
-- analytics role only. A function with a text body, not a view: a view would tie itself
-- to today's outcome_cells table, which a rebuild swaps for a fresh one and drops.
CREATE SCHEMA spineledger_release;
CREATE FUNCTION spineledger_release.parts() RETURNS TABLE (
    clinic_id uuid, evaluated_month date, dimension text, value text, min_cell integer,
    released boolean, episodes bigint, initial_phase_completed bigint,
    baseline_nrs_n bigint, baseline_nrs_sum bigint, baseline_odi_n bigint,
    baseline_odi_sum bigint, nrs_change_session_4_n bigint, nrs_change_session_4_sum bigint,
    nrs_change_session_6_n bigint, nrs_change_session_6_sum bigint,
    nrs_change_discharge_n bigint, nrs_change_discharge_sum bigint,
    odi_change_session_4_n bigint, odi_change_session_4_sum bigint,
    odi_change_session_6_n bigint, odi_change_session_6_sum bigint,
    odi_change_discharge_n bigint, odi_change_discharge_sum bigint,
    nrs_assessed bigint, nrs_responders bigint, odi_assessed bigint, odi_responders bigint,
    missed_sessions bigint, adverse_events bigint, episodes_with_adverse_events bigint,
    discharged_goals_met bigint, discharged_plateau bigint,
    discharged_self_discharge bigint, discharged_referred bigint,
    discharged_adverse_event bigint, discharged_lost_to_follow_up bigint, ongoing bigint,
    scores_corrected bigint
)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $body$
WITH settings AS (SELECT min_cell FROM public.statistics_settings),
parts AS (
    SELECT c.*,
           CASE c.grouping WHEN 0 THEN 'none' WHEN 1 THEN 'diagnosis'
                WHEN 2 THEN 'initial_sessions' WHEN 4 THEN 'frequency_phase'
                WHEN 8 THEN 'adherence_band' WHEN 16 THEN 'age_band' END AS dimension,
           CASE c.grouping WHEN 1 THEN c.diagnosis WHEN 2 THEN c.initial_sessions
                WHEN 4 THEN c.frequency_phase WHEN 8 THEN c.adherence_band
                WHEN 16 THEN c.age_band END AS value
    FROM public.outcome_cells c
    WHERE c.grouping IN (0, 1, 2, 4, 8, 16)
),
ranked AS (
    SELECT parts.*, settings.min_cell,
           row_number() OVER run AS rank,
           sum(CASE WHEN parts.grouping IN (2, 4) AND parts.value = 'no_plan' THEN 0
                    ELSE parts.episodes END) OVER run
               - CASE WHEN parts.grouping IN (2, 4) AND parts.value = 'no_plan' THEN 0
                      ELSE parts.episodes END AS before,
           count(*) FILTER (WHERE parts.episodes < settings.min_cell)
               OVER (PARTITION BY parts.clinic_id, parts.evaluated_month, parts.grouping)
               AS small_parts
    FROM parts CROSS JOIN settings
    WINDOW run AS (PARTITION BY parts.clinic_id, parts.evaluated_month, parts.grouping
                   ORDER BY parts.episodes < settings.min_cell DESC,
                            (parts.grouping IN (2, 4) AND parts.value = 'no_plan'),
                            parts.episodes, parts.value COLLATE "C"
                   ROWS UNBOUNDED PRECEDING)
),
-- Rule 4: where either plan dimension withholds no_plan (an episode without a plan is
-- no_plan in both), both withhold it, and never as the only withheld part. The ranking is
-- done again with the forced part first; elsewhere it is unchanged.
first_pass AS (
    SELECT ranked.*,
           bool_or(ranked.grouping IN (2, 4) AND ranked.value = 'no_plan'
                   AND NOT (ranked.small_parts = 0
                            OR (ranked.rank > ranked.small_parts
                                AND ranked.before >= ranked.min_cell)))
               OVER (PARTITION BY ranked.clinic_id, ranked.evaluated_month)
               AS no_plan_withheld
    FROM ranked
),
forced AS (
    SELECT first_pass.*,
           (first_pass.grouping IN (2, 4) AND first_pass.value = 'no_plan'
            AND first_pass.no_plan_withheld) AS forced
    FROM first_pass
),
-- Rule 5: no_plan (of a plan dimension) counts for nothing towards the k a withheld set
-- must hold, and is the last part chosen to go with a small one.
weighed AS (
    SELECT forced.*,
           CASE WHEN forced.grouping IN (2, 4) AND forced.value = 'no_plan' THEN 0
                ELSE forced.episodes END AS weight
    FROM forced
),
reranked AS (
    SELECT weighed.*,
           row_number() OVER run AS rank2,
           sum(weighed.weight) OVER run - weighed.weight AS before2,
           count(*) FILTER (WHERE weighed.episodes < weighed.min_cell OR weighed.forced)
               OVER clinic_month AS held,
           bool_or(weighed.forced) OVER clinic_month AS has_forced
    FROM weighed
    WINDOW clinic_month AS (PARTITION BY weighed.clinic_id, weighed.evaluated_month,
                                         weighed.grouping),
           run AS (PARTITION BY weighed.clinic_id, weighed.evaluated_month, weighed.grouping
                   ORDER BY (weighed.episodes < weighed.min_cell OR weighed.forced) DESC,
                            weighed.weight = 0, weighed.episodes,
                            weighed.value COLLATE "C"
                   ROWS UNBOUNDED PRECEDING)
)
SELECT clinic_id, evaluated_month, dimension, value, min_cell,
       (held = 0
        OR (rank2 > held + CASE WHEN has_forced AND held = 1 THEN 1 ELSE 0 END
            AND before2 >= min_cell)) AS released,
       episodes, initial_phase_completed, baseline_nrs_n, baseline_nrs_sum,
       baseline_odi_n, baseline_odi_sum, nrs_change_session_4_n, nrs_change_session_4_sum,
       nrs_change_session_6_n, nrs_change_session_6_sum, nrs_change_discharge_n,
       nrs_change_discharge_sum, odi_change_session_4_n, odi_change_session_4_sum,
       odi_change_session_6_n, odi_change_session_6_sum, odi_change_discharge_n,
       odi_change_discharge_sum, nrs_assessed, nrs_responders, odi_assessed,
       odi_responders, missed_sessions, adverse_events, episodes_with_adverse_events,
       discharged_goals_met, discharged_plateau, discharged_self_discharge,
       discharged_referred, discharged_adverse_event, discharged_lost_to_follow_up,
       ongoing, scores_corrected
FROM reranked
$body$;

-- The analysts' schema.
CREATE SCHEMA analytics;
COMMENT ON SCHEMA analytics IS
    'Outcome statistics of spinal decompression episodes, released part by part '
    '(one clinic, one UTC month of first evaluation, one value of at most one dimension). '
    'Parts of fewer than k episodes, and parts withheld to protect them, never appear. '
    'Definitions: the view analytics.definitions and the README.';

-- The released parts as analysts see them (means and rates under k NULL): a definer
-- function the analyst may call, wrapped in the documented view.
CREATE FUNCTION spineledger_release.monthly_outcomes() RETURNS TABLE (
    clinic_id uuid, evaluated_month date, dimension text, value text, episodes bigint,
    initial_phase_completed bigint, baseline_nrs_n bigint, baseline_nrs_mean float8,
    baseline_odi_n bigint, baseline_odi_mean float8, nrs_assessed bigint,
    nrs_responders bigint, odi_assessed bigint, odi_responders bigint,
    missed_sessions bigint, adverse_events bigint, episodes_with_adverse_events bigint,
    discharged_goals_met bigint, discharged_plateau bigint,
    discharged_self_discharge bigint, discharged_referred bigint,
    discharged_adverse_event bigint, discharged_lost_to_follow_up bigint, ongoing bigint,
    drop_out bigint, scores_corrected bigint
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
SELECT clinic_id, evaluated_month, dimension, value, episodes, initial_phase_completed,
       CASE WHEN baseline_nrs_n >= min_cell THEN baseline_nrs_n END AS baseline_nrs_n,
       CASE WHEN baseline_nrs_n >= min_cell
            THEN baseline_nrs_sum::float8 / baseline_nrs_n::float8 END AS baseline_nrs_mean,
       CASE WHEN baseline_odi_n >= min_cell THEN baseline_odi_n END AS baseline_odi_n,
       CASE WHEN baseline_odi_n >= min_cell
            THEN baseline_odi_sum::float8 / (baseline_odi_n::float8 * 1e9::float8)
            END AS baseline_odi_mean,
       CASE WHEN nrs_assessed >= min_cell THEN nrs_assessed END AS nrs_assessed,
       CASE WHEN nrs_assessed >= min_cell THEN nrs_responders END AS nrs_responders,
       CASE WHEN odi_assessed >= min_cell THEN odi_assessed END AS odi_assessed,
       CASE WHEN odi_assessed >= min_cell THEN odi_responders END AS odi_responders,
       missed_sessions, adverse_events, episodes_with_adverse_events,
       discharged_goals_met, discharged_plateau, discharged_self_discharge,
       discharged_referred, discharged_adverse_event, discharged_lost_to_follow_up,
       ongoing, discharged_self_discharge + discharged_lost_to_follow_up AS drop_out,
       scores_corrected
FROM spineledger_release.parts() AS p
WHERE p.released
$body$;

CREATE VIEW analytics.monthly_outcomes AS
SELECT * FROM spineledger_release.monthly_outcomes();
COMMENT ON VIEW analytics.monthly_outcomes IS
    'One row per released part: clinic, month of first evaluation (NULL: never '
    'evaluated), dimension (none, diagnosis, initial_sessions, frequency_phase, '
    'adherence_band, age_band) and its value. Means and rates over fewer than k values '
    'are NULL. Counts by adherence band are not kept beside another dimension (they '
    'would cross-tabulate it): the rows of dimension adherence_band give them. '
    'To add months or clinics up, use analytics.outcome_statistics, which sums '
    'the released parts before it applies the k rule, as the API does.';

-- A window of whole months over the granted clinics (or those named), grouped by one
-- dimension or none, optionally by clinic: the API's GetOutcomeStatistics in SQL.
CREATE FUNCTION analytics.outcome_statistics(
    dimension  text    DEFAULT 'none',
    from_month date    DEFAULT NULL,
    to_month   date    DEFAULT NULL,
    clinics    uuid[]  DEFAULT NULL,
    by_clinic  boolean DEFAULT false
) RETURNS TABLE (
    clinic_id uuid, value text, suppressed boolean, episodes bigint,
    initial_phase_completed bigint,
    baseline_nrs_n bigint, baseline_nrs_mean float8,
    baseline_odi_n bigint, baseline_odi_mean float8,
    nrs_change_session_4_n bigint, nrs_change_session_4_mean float8,
    nrs_change_session_6_n bigint, nrs_change_session_6_mean float8,
    nrs_change_discharge_n bigint, nrs_change_discharge_mean float8,
    odi_change_session_4_n bigint, odi_change_session_4_mean float8,
    odi_change_session_6_n bigint, odi_change_session_6_mean float8,
    odi_change_discharge_n bigint, odi_change_discharge_mean float8,
    nrs_assessed bigint, nrs_responders bigint, odi_assessed bigint, odi_responders bigint,
    missed_sessions bigint, adverse_events bigint,
    episodes_with_adverse_events bigint, discharged_goals_met bigint,
    discharged_plateau bigint, discharged_self_discharge bigint, discharged_referred bigint,
    discharged_adverse_event bigint, discharged_lost_to_follow_up bigint, ongoing bigint,
    drop_out bigint, scores_corrected bigint
)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k integer;
BEGIN
    IF dimension NOT IN ('none', 'diagnosis', 'initial_sessions', 'frequency_phase',
                         'adherence_band', 'age_band') THEN
        RAISE EXCEPTION 'unknown dimension %', dimension USING ERRCODE = '22023',
            HINT = 'none, diagnosis, initial_sessions, frequency_phase, adherence_band '
                   'or age_band';
    END IF;
    IF from_month <> date_trunc('month', from_month)::date
       OR to_month <> date_trunc('month', to_month)::date THEN
        RAISE EXCEPTION 'windows are whole months: from_month and to_month must be the '
                        'first of a month' USING ERRCODE = '22023';
    END IF;
    SELECT s.min_cell INTO k FROM public.statistics_settings s;
    RETURN QUERY
    WITH window_parts AS (
        SELECT p.*
        FROM spineledger_release.parts() p
        WHERE p.dimension = outcome_statistics.dimension
          AND (clinics IS NULL OR cardinality(clinics) = 0 OR p.clinic_id = ANY (clinics))
          AND CASE WHEN from_month IS NULL AND to_month IS NULL THEN true
                   ELSE p.evaluated_month >= coalesce(from_month, '-infinity'::date)
                    AND p.evaluated_month < coalesce(to_month, 'infinity'::date) END
    ),
    summed AS (
        SELECT CASE WHEN by_clinic THEN w.clinic_id END AS clinic_id, w.value,
               sum(w.episodes) FILTER (WHERE w.released) AS episodes,
               sum(w.initial_phase_completed) FILTER (WHERE w.released) AS initial_phase_completed,
               sum(w.baseline_nrs_n) FILTER (WHERE w.released) AS baseline_nrs_n,
               sum(w.baseline_nrs_sum) FILTER (WHERE w.released) AS baseline_nrs_sum,
               sum(w.baseline_odi_n) FILTER (WHERE w.released) AS baseline_odi_n,
               sum(w.baseline_odi_sum) FILTER (WHERE w.released) AS baseline_odi_sum,
               sum(w.nrs_change_session_4_n) FILTER (WHERE w.released) AS n4n,
               sum(w.nrs_change_session_4_sum) FILTER (WHERE w.released) AS n4s,
               sum(w.nrs_change_session_6_n) FILTER (WHERE w.released) AS n6n,
               sum(w.nrs_change_session_6_sum) FILTER (WHERE w.released) AS n6s,
               sum(w.nrs_change_discharge_n) FILTER (WHERE w.released) AS ndn,
               sum(w.nrs_change_discharge_sum) FILTER (WHERE w.released) AS nds,
               sum(w.odi_change_session_4_n) FILTER (WHERE w.released) AS o4n,
               sum(w.odi_change_session_4_sum) FILTER (WHERE w.released) AS o4s,
               sum(w.odi_change_session_6_n) FILTER (WHERE w.released) AS o6n,
               sum(w.odi_change_session_6_sum) FILTER (WHERE w.released) AS o6s,
               sum(w.odi_change_discharge_n) FILTER (WHERE w.released) AS odn,
               sum(w.odi_change_discharge_sum) FILTER (WHERE w.released) AS ods,
               sum(w.nrs_assessed) FILTER (WHERE w.released) AS nrs_assessed,
               sum(w.nrs_responders) FILTER (WHERE w.released) AS nrs_responders,
               sum(w.odi_assessed) FILTER (WHERE w.released) AS odi_assessed,
               sum(w.odi_responders) FILTER (WHERE w.released) AS odi_responders,
               sum(w.missed_sessions) FILTER (WHERE w.released) AS missed,
               sum(w.adverse_events) FILTER (WHERE w.released) AS adverse,
               sum(w.episodes_with_adverse_events) FILTER (WHERE w.released) AS adverse_episodes,
               sum(w.discharged_goals_met) FILTER (WHERE w.released) AS d1,
               sum(w.discharged_plateau) FILTER (WHERE w.released) AS d2,
               sum(w.discharged_self_discharge) FILTER (WHERE w.released) AS d3,
               sum(w.discharged_referred) FILTER (WHERE w.released) AS d4,
               sum(w.discharged_adverse_event) FILTER (WHERE w.released) AS d5,
               sum(w.discharged_lost_to_follow_up) FILTER (WHERE w.released) AS d6,
               sum(w.ongoing) FILTER (WHERE w.released) AS ongoing,
               sum(w.scores_corrected) FILTER (WHERE w.released) AS corrected
        FROM window_parts w
        GROUP BY 1, 2
    )
    SELECT s.clinic_id, s.value, s.episodes IS NULL, s.episodes::bigint,
           s.initial_phase_completed::bigint,
           CASE WHEN s.baseline_nrs_n >= k THEN s.baseline_nrs_n::bigint END,
           CASE WHEN s.baseline_nrs_n >= k
                THEN s.baseline_nrs_sum::float8 / s.baseline_nrs_n::float8 END,
           CASE WHEN s.baseline_odi_n >= k THEN s.baseline_odi_n::bigint END,
           CASE WHEN s.baseline_odi_n >= k
                THEN s.baseline_odi_sum::float8 / (s.baseline_odi_n::float8 * 1e9::float8) END,
           CASE WHEN s.n4n >= k THEN s.n4n::bigint END,
           CASE WHEN s.n4n >= k THEN s.n4s::float8 / s.n4n::float8 END,
           CASE WHEN s.n6n >= k THEN s.n6n::bigint END,
           CASE WHEN s.n6n >= k THEN s.n6s::float8 / s.n6n::float8 END,
           CASE WHEN s.ndn >= k THEN s.ndn::bigint END,
           CASE WHEN s.ndn >= k THEN s.nds::float8 / s.ndn::float8 END,
           CASE WHEN s.o4n >= k THEN s.o4n::bigint END,
           CASE WHEN s.o4n >= k THEN s.o4s::float8 / (s.o4n::float8 * 1e9::float8) END,
           CASE WHEN s.o6n >= k THEN s.o6n::bigint END,
           CASE WHEN s.o6n >= k THEN s.o6s::float8 / (s.o6n::float8 * 1e9::float8) END,
           CASE WHEN s.odn >= k THEN s.odn::bigint END,
           CASE WHEN s.odn >= k THEN s.ods::float8 / (s.odn::float8 * 1e9::float8) END,
           CASE WHEN s.nrs_assessed >= k THEN s.nrs_assessed::bigint END,
           CASE WHEN s.nrs_assessed >= k THEN s.nrs_responders::bigint END,
           CASE WHEN s.odi_assessed >= k THEN s.odi_assessed::bigint END,
           CASE WHEN s.odi_assessed >= k THEN s.odi_responders::bigint END,
           s.missed::bigint,
           s.adverse::bigint, s.adverse_episodes::bigint, s.d1::bigint, s.d2::bigint,
           s.d3::bigint, s.d4::bigint, s.d5::bigint, s.d6::bigint, s.ongoing::bigint,
           (s.d3 + s.d6)::bigint, s.corrected::bigint
    FROM summed s
    WHERE s.episodes IS NOT NULL
    ORDER BY s.clinic_id, s.value COLLATE "C";
END;
$$;
COMMENT ON FUNCTION analytics.outcome_statistics(text, date, date, uuid[], boolean) IS
    'Outcome statistics over whole months [from_month, to_month) (NULL: unbounded; '
    'episodes never evaluated count only when both are NULL), over the clinics granted '
    '(or those of them named; NULL or an empty array: every one granted), grouped by '
    'one dimension or none, and by clinic if asked: '
    'the sums of the released parts, with means and rates over fewer than k values NULL. '
    'A group with nothing released is not listed (suppressed is always false; kept for '
    'the API''s shape). The same figures as the API''s GetOutcomeStatistics.';

CREATE VIEW analytics.definitions (statistic, definition, source) AS VALUES
    ('part', 'the episodes of one clinic first evaluated in one UTC month, in one value of one dimension (or all)', NULL),
    ('released', 'a part of at least k episodes that is not withheld to protect a smaller one in its clinic-month', 'NHS Digital small-number suppression (1-7)'),
    ('k', 'the minimum cell size, public.statistics_settings; 8 unless the operator changed it', NULL),
    ('NRS', 'back pain on the 0-10 numeric rating scale', 'LOINC 72514-3'),
    ('ODI', 'Oswestry Disability Index 0-100 %', 'Fairbank & Pynsent, Spine 2000;25(22):2940-52'),
    ('baseline', 'the first evaluation', NULL),
    ('change', 'follow-up minus baseline, negative is improvement; at session 4 / 6: the last outcome or reassessment after exactly 4 / 6 sessions; at discharge: the latest follow-up of a discharged episode', NULL),
    ('responder', 'NRS improved >= 2 points or >= 30 %; ODI >= 10 points or >= 30 %, at the latest follow-up, of the episodes with baseline and follow-up', 'Ostelo et al., Spine 2008;33(1):90-94'),
    ('adherence band', 'mean of the adherence reports: low < 50 %, moderate 50-79 %, high >= 80 %, none reported', NULL),
    ('drop-out', 'discharged as self-discharge or lost to follow-up', NULL),
    ('scores corrected', 'episodes where a correction changed a value these statistics use', NULL);

-- A new owner needs CREATE on the schema (unless the migrator is a superuser); it keeps
-- none afterwards.
GRANT CREATE ON SCHEMA spineledger_release, analytics TO spineledger_analytics;
ALTER FUNCTION spineledger_release.parts() OWNER TO spineledger_analytics;
ALTER FUNCTION spineledger_release.monthly_outcomes() OWNER TO spineledger_analytics;
ALTER VIEW analytics.monthly_outcomes OWNER TO spineledger_analytics;
ALTER VIEW analytics.definitions OWNER TO spineledger_analytics;
ALTER FUNCTION analytics.outcome_statistics(text, date, date, uuid[], boolean)
    OWNER TO spineledger_analytics;
REVOKE CREATE ON SCHEMA spineledger_release, analytics FROM spineledger_analytics;
GRANT USAGE ON SCHEMA spineledger_release TO spineledger_analytics;
GRANT USAGE ON SCHEMA analytics TO spineledger_analytics;

REVOKE ALL ON SCHEMA spineledger_release FROM PUBLIC;
REVOKE ALL ON FUNCTION spineledger_release.parts(), spineledger_release.monthly_outcomes()
    FROM PUBLIC;
-- The analyst reaches the view's own rows through the function behind it, and nothing
-- else in that schema.
GRANT USAGE ON SCHEMA spineledger_release TO spineledger_analyst;
GRANT EXECUTE ON FUNCTION spineledger_release.monthly_outcomes() TO spineledger_analyst;
REVOKE ALL ON SCHEMA analytics FROM PUBLIC;
REVOKE ALL ON FUNCTION analytics.outcome_statistics(text, date, date, uuid[], boolean)
    FROM PUBLIC;
GRANT USAGE ON SCHEMA analytics TO spineledger_analyst;
GRANT SELECT ON analytics.monthly_outcomes, analytics.definitions TO spineledger_analyst;
GRANT EXECUTE ON FUNCTION analytics.outcome_statistics(text, date, date, uuid[], boolean)
    TO spineledger_analyst;

-- Statistics as of a global position (GetOutcomeStatistics as_of_*): the position's
-- cursor in the global order, (xid, position), and whether it is final (every
-- transaction up to its own has ended, so the log up to it is settled). The position
-- may be any clinic's (an earlier answer states its projection's checkpoint); only the
-- transaction id is learnt, never the event.
CREATE FUNCTION spineledger_event_cursor(at_position bigint)
RETURNS TABLE (xid bigint, final boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.xid::text::bigint, e.xid < pg_snapshot_xmin(pg_current_snapshot())
    FROM public.events e WHERE e.position = at_position
$$;
REVOKE ALL ON FUNCTION spineledger_event_cursor(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION spineledger_event_cursor(bigint) TO spineledger_app;
