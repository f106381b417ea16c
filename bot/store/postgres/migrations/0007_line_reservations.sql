-- The line, forgotten members and a Cancel that reaches another process, in the reservation and the jobs.

-- A member asked another process to cancel a task this one drives: the driver sees it at its next lease
-- renewal, stops waiting for the provider and ends the task as CANCELLED (unix seconds; NULL: none asked).
ALTER TABLE jobs ADD COLUMN cancel_requested_at DOUBLE PRECISION;
-- A member's tasks: how many run or wait (/quota), and what /forget-me deletes.
CREATE INDEX jobs_member ON jobs (user_id, guild_id);

-- Hold one task for a member, or say why not, in one step that no interleaving can break.
--
-- A member's tasks past MAX_INFLIGHT_PER_USER are no longer refused: they wait in line (the runner keeps
-- the per-member running cap when it dispatches). What a reservation refuses is the quota, and a provider
-- whose line is full: `p_max_held` (MAX_INFLIGHT_PER_PROVIDER + MAX_QUEUE_PER_PROVIDER) reservations held
-- for it already, running or waiting.
--
-- A reservation is held while its task may still run: a job carries it (in line or at the provider, however
-- long that takes), or it is recent (started after `p_alive_after`: the process died between reserving and
-- saving its job). A forgotten member's rows of today carry their stand-in id (`p_stand_in`): they count.
--
-- The locks are those of migration 0002, in the same order: the member's (by user id), then the provider's,
-- both transaction-scoped. What the member may still do is counted under the member's lock alone; the
-- provider's is held just for its count and the insert. It returns the counts it decided on and the new
-- usage id, NULL when refused (held_provider NULL: refused for the quota, before the provider counted).
-- As before, its commit does not wait for the disk (the job's own commit makes it durable).
DROP FUNCTION bot_reserve(BIGINT, BIGINT, TEXT, TEXT, TEXT, DOUBLE PRECISION, DOUBLE PRECISION, INTEGER, INTEGER, INTEGER);
CREATE FUNCTION bot_reserve(
    p_guild BIGINT, p_user BIGINT, p_stand_in BIGINT, p_kind TEXT, p_provider TEXT, p_day TEXT,
    p_now DOUBLE PRECISION, p_alive_after DOUBLE PRECISION, p_limit INTEGER, p_max_held INTEGER
) RETURNS TABLE (usage_id BIGINT, used BIGINT, granted BIGINT, held_provider BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    usage_id := NULL;
    held_provider := NULL;
    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || ':quota-user:' || p_user, 0));
    -- What counts against today's quota: spent tasks not forgiven by a reset, and held ones.
    SELECT count(*) INTO used FROM usage u
        WHERE u.guild_id = p_guild AND u.user_id IN (p_user, p_stand_in) AND u.kind = p_kind
        AND u.day = p_day AND u.forgiven = 0
        AND (u.state = 'committed' OR (u.state = 'reserved' AND (u.started_at > p_alive_after OR EXISTS
            (SELECT 1 FROM jobs j WHERE j.usage_id = u.id AND j.finished_at IS NULL))));
    SELECT COALESCE(sum(g.amount), 0) INTO granted FROM quota_grants g
        WHERE g.guild_id = p_guild AND g.user_id IN (p_user, p_stand_in) AND g.kind = p_kind
        AND g.day = p_day;
    IF p_limit <> -1 AND used >= p_limit + granted THEN
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || ':quota-provider:' || p_provider, 0));
    SELECT count(*) INTO held_provider FROM usage u
        WHERE u.state = 'reserved' AND u.provider = p_provider
        AND (u.started_at > p_alive_after OR EXISTS
            (SELECT 1 FROM jobs j WHERE j.usage_id = u.id AND j.finished_at IS NULL));
    IF held_provider < p_max_held THEN
        INSERT INTO usage (guild_id, user_id, kind, provider, state, day, started_at)
            VALUES (p_guild, p_user, p_kind, p_provider, 'reserved', p_day, p_now)
            RETURNING id INTO usage_id;
    END IF;
    RETURN NEXT;
END
$$;
