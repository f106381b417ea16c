-- Numbered migrations run in order at start; PRAGMA user_version records the last one applied.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The quota ledger and the usage log in one: a row is one task a member asked for.
-- state: reserved (held while the task runs), committed (spent), refunded (not the member's doing),
-- cached (answered from the describe cache, free).
CREATE TABLE usage (
    id               INTEGER PRIMARY KEY,
    guild_id         INTEGER NOT NULL,          -- 0 in direct messages
    user_id          INTEGER NOT NULL,
    kind             TEXT    NOT NULL,          -- describe | imagine
    provider         TEXT    NOT NULL,
    provider_task_id TEXT,
    state            TEXT    NOT NULL,
    outcome          TEXT,                      -- the task's end: COMPLETED, FAILED, or a fault name
    day              TEXT    NOT NULL,          -- the UTC day the task counts against, YYYY-MM-DD
    forgiven         INTEGER NOT NULL DEFAULT 0, -- 1 once an admin reset the member's day
    started_at       REAL    NOT NULL,
    ended_at         REAL
);
CREATE INDEX usage_member_day ON usage (guild_id, user_id, day, kind);
CREATE INDEX usage_state ON usage (state, provider);
CREATE INDEX usage_started ON usage (started_at);

-- Limits set by admins. scope: server (target_id = guild id), role, user. daily_limit -1 is unlimited.
CREATE TABLE quota_limits (
    guild_id    INTEGER NOT NULL,
    scope       TEXT    NOT NULL,
    target_id   INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    daily_limit INTEGER NOT NULL,
    PRIMARY KEY (guild_id, scope, target_id, kind)
);

-- Extra tasks granted to a member for one UTC day.
CREATE TABLE quota_grants (
    id         INTEGER PRIMARY KEY,
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    day        TEXT    NOT NULL,
    amount     INTEGER NOT NULL
);
CREATE INDEX quota_grants_member_day ON quota_grants (guild_id, user_id, day, kind);

-- Every admin change, with who made it.
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    actor_id INTEGER NOT NULL,
    action   TEXT    NOT NULL,
    detail   TEXT    NOT NULL,   -- JSON
    at       REAL    NOT NULL
);

-- A job is one member's request driven to its end: what to poll and where to report.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    kind              TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    provider_task_id  TEXT,
    state             TEXT    NOT NULL,   -- QUEUED, STARTING, CREATED, IN_PROGRESS, COMPLETED, FAILED
    reported_state    TEXT,               -- the last state Discord was shown
    fault             TEXT,               -- why it failed (a ProviderFault value)
    usage_id          INTEGER REFERENCES usage (id),
    guild_id          INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    channel_id        INTEGER,
    message_id        INTEGER,
    application_id    INTEGER,
    interaction_token TEXT,               -- cleared when the job ends
    token_created_at  REAL,
    report_via        TEXT    NOT NULL DEFAULT 'interaction',  -- interaction | channel
    input_hash        TEXT,
    prompt            TEXT,               -- imagine: the member's prompt
    result_text       TEXT,               -- describe: the prompt the provider gave
    notice            TEXT,               -- a line shown with the result (cached, fell back to another provider)
    created_at        REAL    NOT NULL,
    started_at        REAL,               -- when the provider task was created
    updated_at        REAL    NOT NULL,
    finished_at       REAL
);
CREATE INDEX jobs_unfinished ON jobs (finished_at) WHERE finished_at IS NULL;
CREATE INDEX jobs_task ON jobs (provider, provider_task_id);

-- The images a job needs after its command returned: inputs (to start it after a restart, to run it
-- again) and outputs (to upload, to edit further).
CREATE TABLE job_images (
    job_id   TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    role     TEXT    NOT NULL,   -- input | output
    position INTEGER NOT NULL,
    mime     TEXT    NOT NULL,
    data     BLOB    NOT NULL,
    PRIMARY KEY (job_id, role, position)
);

CREATE TABLE describe_cache (
    image_hash TEXT NOT NULL,
    provider   TEXT NOT NULL,
    prompt     TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (image_hash, provider)
);
