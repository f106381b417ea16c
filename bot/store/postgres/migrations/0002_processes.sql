-- What several processes on one database need: leases on jobs, the webhook replay guard and the
-- webhook inbox shared by all of them, and the reservation as one locked step.

-- A job is driven by the process that holds its lease: `owner` names the process, `lease_expires_at`
-- (unix seconds on the database server's clock) says until when. A process renews its leases while it
-- lives; once one runs out, another process claims the job (FOR UPDATE SKIP LOCKED) and carries it on.
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at DOUBLE PRECISION;
CREATE INDEX jobs_owner ON jobs (owner) WHERE finished_at IS NULL;

-- Webhook ids seen lately, whichever process received them: a replayed delivery is handled once.
CREATE TABLE webhook_seen (
    webhook_id TEXT PRIMARY KEY,
    seen_at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX webhook_seen_at ON webhook_seen (seen_at);

-- Deliveries received by a process that does not drive their task: the driver is told (NOTIFY) and
-- takes them; one that arrived before the create answer was saved waits here for its driver.
CREATE TABLE webhook_inbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider    TEXT             NOT NULL,
    task_id     TEXT             NOT NULL,
    body        BYTEA            NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX webhook_inbox_task ON webhook_inbox (provider, task_id);
CREATE INDEX webhook_inbox_received ON webhook_inbox (received_at);

-- The in-flight counts of a reservation read only running rows: a member's, and a provider's.
CREATE INDEX usage_reserved_user ON usage (user_id, started_at) WHERE state = 'reserved';
CREATE INDEX usage_reserved_provider ON usage (provider, started_at) WHERE state = 'reserved';

-- Hold one task for a member, or say why not, in one step that no interleaving can break.
--
-- Two transaction-scoped advisory locks order every reservation: first the member's (keyed by the user
-- id, since the in-flight cap spans servers; it covers the member's quota in every server), then the
-- provider's (for the per-provider in-flight cap). Every caller takes them in that order, so none
-- deadlock; they end with the transaction. Under READ COMMITTED each statement of this function sees
-- every row committed before it began, so the counts below include every reservation that held the
-- same lock before: two reservations can never both count the same last unit. What the member may
-- still do is counted under the member's lock alone (only the member's own reservations add to it);
-- the provider's lock, which every reservation of the provider queues for, is held just for its count
-- and the insert.
--
-- The limit is resolved by the caller (the rule is the domain's); it returns the counts it decided on
-- and the new usage id, NULL when refused (running_provider NULL: refused before the provider counted).
--
-- Its commit does not wait for the disk (synchronous_commit off, for this transaction only), so the locks
-- are held for the work alone. That loses nothing that counts: a reservation matters once its job is
-- saved, and saving the job is an ordinary commit, which writes every earlier commit to disk with it. A
-- reservation that a database crash could take back belongs to a job never saved, which never ran.
CREATE FUNCTION bot_reserve(
    p_guild BIGINT, p_user BIGINT, p_kind TEXT, p_provider TEXT, p_day TEXT, p_now DOUBLE PRECISION,
    p_alive_after DOUBLE PRECISION, p_limit INTEGER, p_max_user INTEGER, p_max_provider INTEGER
) RETURNS TABLE (usage_id BIGINT, used BIGINT, granted BIGINT, running_user BIGINT, running_provider BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    usage_id := NULL;
    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || ':quota-user:' || p_user, 0));
    -- What counts against today's quota: spent tasks not forgiven by a reset, and running ones. A
    -- reservation older than the reservation lifetime cannot be running any more: it counts for nothing.
    SELECT count(*) INTO used FROM usage u
        WHERE u.guild_id = p_guild AND u.user_id = p_user AND u.kind = p_kind AND u.day = p_day
        AND u.forgiven = 0 AND (u.state = 'committed' OR (u.state = 'reserved' AND u.started_at > p_alive_after));
    SELECT COALESCE(sum(g.amount), 0) INTO granted FROM quota_grants g
        WHERE g.guild_id = p_guild AND g.user_id = p_user AND g.kind = p_kind AND g.day = p_day;
    SELECT count(*) INTO running_user FROM usage u
        WHERE u.state = 'reserved' AND u.user_id = p_user AND u.started_at > p_alive_after;
    IF (p_limit <> -1 AND used >= p_limit + granted) OR running_user >= p_max_user THEN
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || ':quota-provider:' || p_provider, 0));
    SELECT count(*) INTO running_provider FROM usage u
        WHERE u.state = 'reserved' AND u.provider = p_provider AND u.started_at > p_alive_after;
    IF running_provider < p_max_provider THEN
        INSERT INTO usage (guild_id, user_id, kind, provider, state, day, started_at)
            VALUES (p_guild, p_user, p_kind, p_provider, 'reserved', p_day, p_now)
            RETURNING id INTO usage_id;
    END IF;
    RETURN NEXT;
END
$$;
