-- A line for each provider instead of refusals, and the rules a server sets for its channels and prompts
-- (SQLite migration 0005).

-- A job waits in line until it is dispatched (dispatched_at set); members take turns by when their last
-- task left the line. Jobs saved before the line existed had been started at once.
ALTER TABLE jobs ADD COLUMN dispatched_at DOUBLE PRECISION;
UPDATE jobs SET dispatched_at = created_at;
CREATE INDEX jobs_line ON jobs (provider, created_at) WHERE finished_at IS NULL AND dispatched_at IS NULL;
CREATE INDEX jobs_served ON jobs (provider, user_id, dispatched_at);
-- The running jobs a dispatch counts: a provider's, and a member's at every provider.
CREATE INDEX jobs_running ON jobs (provider, user_id) WHERE finished_at IS NULL AND dispatched_at IS NOT NULL;

-- 0 or 1, as in SQLite (copy-to-postgres copies the values as they are).
ALTER TABLE jobs ADD COLUMN spoiler INTEGER NOT NULL DEFAULT 0;  -- its images behind a spoiler (the channel's rule)
ALTER TABLE jobs ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;   -- describe: a prompt has a blocked word

-- What a channel allows and when its results are spoilered; a channel without a row allows everything.
CREATE TABLE channel_rules (
    guild_id   BIGINT  NOT NULL,
    channel_id BIGINT  NOT NULL,
    describe   INTEGER NOT NULL DEFAULT 1,
    imagine    INTEGER NOT NULL DEFAULT 1,
    spoilers   TEXT    NOT NULL DEFAULT 'off',  -- off | outside-age-restricted | always
    PRIMARY KEY (guild_id, channel_id)
);

-- Words and phrases no prompt may contain, normalised (the form that is matched) and as the admin wrote them.
CREATE TABLE blocklist (
    guild_id BIGINT           NOT NULL,
    phrase   TEXT             NOT NULL,
    written  TEXT             NOT NULL,
    added_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, phrase)
);
