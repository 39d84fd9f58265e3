-- Row-level security that holds even against a bug in our own SQL.
--
-- The server connects as `arbiter_app` (or a role that is a member of it):
-- not the tables' owner, not a superuser, NOBYPASSRLS. Each request runs in a
-- transaction that first does `set_config('app.tenant_id', $1, true)`; every
-- tenant-owned table lets it see and write only rows of that tenant, and with
-- no tenant set it sees nothing (`current_setting(..., true)` is NULL).
--
-- FORCE applies the policies to the owner too; the owner (the role that runs
-- these migrations, and the operator's CLI) gets its own policy that lets it
-- see every tenant: it could turn row security off anyway, being the owner.
--
-- One more policy on `api_tokens`: the HTTP server looks a token up by its
-- hash before it knows the tenant, so a row is visible when
-- `app.token_hash` is set to that row's hash (only someone holding the
-- token knows it).
--
-- The app role may not UPDATE or DELETE audit records, and may DELETE nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'arbiter_app') THEN
        RAISE EXCEPTION 'the role arbiter_app does not exist: create it first (NOSUPERUSER NOBYPASSRLS; see README, PostgreSQL)';
    END IF;
END
$$;

DO $$
DECLARE
    t TEXT;
    col TEXT;
BEGIN
    FOR t, col IN VALUES
        ('audit_records', 'tenant'), ('audit_heads', 'tenant'), ('change_budget', 'tenant'),
        ('overrides', 'tenant'), ('override_events', 'tenant'), ('api_tokens', 'tenant'),
        ('tenants', 'name'), ('tasks', 'tenant'), ('task_events', 'tenant'),
        ('agents', 'tenant'), ('routing_decisions', 'tenant'), ('routing_scores', 'tenant'),
        ('agent_performance', 'tenant'), ('task_verdicts', 'tenant'),
        ('task_gate_results', 'tenant')
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (%I = current_setting(''app.tenant_id'', true)) '
            'WITH CHECK (%I = current_setting(''app.tenant_id'', true))', t, col, col);
        EXECUTE format('CREATE POLICY operator ON %I TO CURRENT_USER USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;

CREATE POLICY token_lookup ON api_tokens FOR SELECT
    USING (hash = current_setting('app.token_hash', true));

GRANT SELECT, INSERT ON audit_records TO arbiter_app;
GRANT SELECT, INSERT, UPDATE ON
    audit_heads, change_budget, overrides, override_events, api_tokens, tenants, tasks,
    task_events, agents, routing_decisions, routing_scores, agent_performance,
    task_verdicts, task_gate_results
    TO arbiter_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO arbiter_app;
