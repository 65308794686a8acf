-- Treatment plan lists: filtered by patient, ordered by next session due.
--
-- ListTreatmentPlans orders a clinic's plans by next session due (soonest, i.e. most
-- overdue, first; plans without a due date last), ties by episode id, and pages by keyset
-- on (next_session_due, episode_id). The indexes below serve that order, alone and after
-- the equality filters on phase and patient. A rebuild copies the table with
-- `CREATE TABLE … (LIKE treatment_plans INCLUDING ALL)`, so the column and the indexes
-- exist in the rebuilt table too (and keep these names after the swap).

-- The episode's (pseudonymous) patient, written by the projector with the view; null
-- until the episode's first evaluation names the patient.
ALTER TABLE treatment_plans ADD COLUMN patient_id uuid;

-- Rows projected before this migration: the view holds the patient id.
UPDATE treatment_plans
   SET patient_id = (view->>'patient_id')::uuid
 WHERE view->>'patient_id' IS NOT NULL;

CREATE INDEX treatment_plans_due ON treatment_plans (clinic_id, next_session_due, episode_id);
CREATE INDEX treatment_plans_patient
    ON treatment_plans (clinic_id, patient_id, next_session_due, episode_id);

-- The phase filter, in list order (it was in episode id order).
DROP INDEX treatment_plans_phase;
CREATE INDEX treatment_plans_phase
    ON treatment_plans (clinic_id, phase, next_session_due, episode_id);
