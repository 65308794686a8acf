-- Narrower grants, found in review of V4.
--
-- 1. Nobody but the owner creates objects in the schema. PostgreSQL 15 no longer grants
--    CREATE on `public` to PUBLIC, but a cluster upgraded from an older version keeps the
--    old grant: with it the app role could create a function or table that shadows one
--    the owner calls (by overload resolution or search_path) and so run SQL as the owner.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- 2. The app role updates a stream's version and nothing else: no statement of the
--    service changes a stream's clinic or id, so no grant allows it (row-level security
--    already keeps both inside the transaction's clinics).
REVOKE UPDATE ON streams FROM spineledger_app;
GRANT UPDATE (version) ON streams TO spineledger_app;
