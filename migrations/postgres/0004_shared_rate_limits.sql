-- Per-token request limits counted in the database, so that several
-- `serve --http` processes on one database share a token's budget
-- (src/server/rate.rs). GCRA: one row per token holding its theoretical
-- arrival time (`tat`, microseconds on the database's clock, which every
-- process shares); a request is let in when `max(tat, now) - now` is within
-- the burst tolerance, and moves `tat` one interval on.

CREATE TABLE rate_counts (
    tenant   TEXT   NOT NULL,
    token_id BIGINT NOT NULL,
    tat      BIGINT NOT NULL,
    PRIMARY KEY (tenant, token_id)
);

ALTER TABLE rate_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_counts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rate_counts
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));
CREATE POLICY operator ON rate_counts TO CURRENT_USER USING (true) WITH CHECK (true);

-- Count one request in one round trip; returns 0 when it is let in, else the
-- microseconds until one would be. SECURITY INVOKER (the default): it runs
-- as the caller, under row-level security, and sets the tenant
-- transaction-locally itself, as every request of the server does first.
CREATE FUNCTION arbiter_rate_take(
    p_tenant TEXT, p_token BIGINT, p_interval_us BIGINT, p_tolerance_us BIGINT
) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = public
AS $$
DECLARE
    now_us BIGINT := (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
    v_tat  BIGINT;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    INSERT INTO rate_counts AS r (tenant, token_id, tat)
    VALUES (p_tenant, p_token, now_us + p_interval_us)
    ON CONFLICT (tenant, token_id) DO UPDATE
        SET tat = GREATEST(r.tat, now_us) + p_interval_us
        WHERE GREATEST(r.tat, now_us) - now_us <= p_tolerance_us
    RETURNING r.tat INTO v_tat;
    IF FOUND THEN
        RETURN 0;
    END IF;
    -- Refused: the row is locked by the upsert, so this reads what refused it.
    SELECT r.tat INTO v_tat FROM rate_counts r
        WHERE r.tenant = p_tenant AND r.token_id = p_token;
    RETURN GREATEST(v_tat - now_us - p_tolerance_us, 1);
END
$$;

GRANT SELECT, INSERT, UPDATE ON rate_counts TO arbiter_app;
REVOKE ALL ON FUNCTION arbiter_rate_take(TEXT, BIGINT, BIGINT, BIGINT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION arbiter_rate_take(TEXT, BIGINT, BIGINT, BIGINT) TO arbiter_app;
