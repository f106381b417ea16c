"""The PostgreSQL implementation of the storage ports, for several bot processes on one database.

Nothing here is imported unless DATABASE_URL is set (asyncpg is loaded by the modules that use it).
"""
