-- Every member in their own language: the languages a job is shown in, kept with its route so a restart
-- shows the rest of the job in the same words. Discord locale codes ("ja", "pt-BR"); NULL when Discord
-- did not say (jobs from before this migration, direct messages have no server language).
ALTER TABLE jobs ADD COLUMN member_locale TEXT;   -- the language of the member who asked (interaction.locale)
ALTER TABLE jobs ADD COLUMN guild_locale TEXT;    -- the server's language, for messages that belong to no member
