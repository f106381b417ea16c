-- /describe styles and several suggestions (SQLite migration 0003): what a job asked for, and its prompts as a
-- list.
ALTER TABLE jobs ADD COLUMN style TEXT;                                   -- describe: detailed, short, tags, ...
ALTER TABLE jobs ADD COLUMN suggestions_asked INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN suggestions TEXT;  -- JSON [{"prompt", "negative"}]; result_text keeps the first prompt

-- The cache is keyed on what the answer depends on besides the image and the provider: the model, the
-- style and the number of suggestions (its "variant"). Rows from before answered one detailed prompt with
-- no model of their own.
CREATE TABLE describe_cache_new (
    image_hash  TEXT             NOT NULL,
    provider    TEXT             NOT NULL,
    variant     TEXT             NOT NULL,  -- "{model}|{style}|{count}"
    suggestions TEXT             NOT NULL,  -- JSON, as in jobs.suggestions
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (image_hash, provider, variant)
);
INSERT INTO describe_cache_new (image_hash, provider, variant, suggestions, created_at)
    SELECT image_hash, provider, '|detailed|1',
           json_build_array(json_build_object('prompt', prompt, 'negative', NULL))::text, created_at
    FROM describe_cache;
DROP TABLE describe_cache;
ALTER TABLE describe_cache_new RENAME TO describe_cache;
ALTER TABLE describe_cache RENAME CONSTRAINT describe_cache_new_pkey TO describe_cache_pkey;
