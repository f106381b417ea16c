"""The bot's language: tasks, jobs, quotas, errors as codes, and the ports the core needs."""
