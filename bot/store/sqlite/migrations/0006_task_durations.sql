-- Learned polling: how long each provider's tasks took lately, as the bot saw them end, so that the poll
-- schedule a restart starts with is the one it had learned. Only the newest few hundred tasks (by start)
-- of each provider and kind are kept: the runner asks for that many, and older rows go as new ones come.
CREATE TABLE task_durations (
    id           INTEGER PRIMARY KEY,
    provider     TEXT NOT NULL,
    kind         TEXT NOT NULL,   -- describe | imagine
    started_at   REAL NOT NULL,   -- when the create answer came (Unix time)
    ran_for      REAL NOT NULL,   -- seconds after it at which the task was last seen running
    ended_within REAL NOT NULL    -- seconds after it at which its end was seen (>= ran_for)
);
CREATE INDEX task_durations_recent ON task_durations (provider, kind, started_at);
