-- Every member in their own language (SQLite migration 0004): the languages a job is shown in, kept with its
-- route so that whichever process carries the job on shows the rest of it in the same words. Discord locale
-- codes ("ja", "pt-BR"); NULL when Discord did not say.
ALTER TABLE jobs ADD COLUMN member_locale TEXT;  -- the language of the member who asked (interaction.locale)
ALTER TABLE jobs ADD COLUMN guild_locale TEXT;   -- the server's language, for messages that belong to no member
