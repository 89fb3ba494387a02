-- entasis_reader: the analysts' read-only role. It may SELECT every table and view in ml.* (now and
-- later: default privileges) and nothing else: no market.*, no features.*, no writes anywhere.
--
-- Roles are cluster-wide, so creation is guarded (another database of the same server may have made
-- it already, possibly at the same moment). A migrating user without CREATEROLE cannot create it:
-- then we warn and skip, and a DBA runs the statements in docs/analysts.md by hand.
DO $$
DECLARE
    can_create boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'entasis_reader') THEN
        SELECT rolsuper OR rolcreaterole INTO can_create FROM pg_roles WHERE rolname = current_user;
        IF NOT coalesce(can_create, false) THEN
            RAISE WARNING 'role entasis_reader does not exist and % may not create roles; '
                          'see docs/analysts.md to create it by hand', current_user;
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE entasis_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- a concurrent migration of another database created it first
        END;
        -- Defence in depth: the reader's sessions start read-only (its grants already forbid writes).
        ALTER ROLE entasis_reader SET default_transaction_read_only = on;
    END IF;

    EXECUTE format('GRANT CONNECT ON DATABASE %I TO entasis_reader', current_database());
    GRANT USAGE ON SCHEMA ml TO entasis_reader;
    GRANT SELECT ON ALL TABLES IN SCHEMA ml TO entasis_reader;
    -- Tables and views that later migrations (run by this same user) add to ml are readable too.
    ALTER DEFAULT PRIVILEGES IN SCHEMA ml GRANT SELECT ON TABLES TO entasis_reader;
    -- Nothing outside ml: undo any earlier grant so the role's reach is exactly ml.*.
    REVOKE ALL ON ALL TABLES IN SCHEMA market FROM entasis_reader;
    REVOKE ALL ON ALL TABLES IN SCHEMA features FROM entasis_reader;
    REVOKE ALL ON SCHEMA market FROM entasis_reader;
    REVOKE ALL ON SCHEMA features FROM entasis_reader;
END
$$;
