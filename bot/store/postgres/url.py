"""DATABASE_URL as it may be shown: the password is never printed, logged or put in an error."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SCHEMES = frozenset({"postgresql", "postgres"})
HIDDEN = "***"
# Query parameters libpq (and asyncpg) read a password or a key from.
_SECRET_PARAMS = frozenset({"password", "sslpassword", "passfile", "sslkey"})


def is_postgres_url(url: str) -> bool:
    try:
        return urlsplit(url).scheme in SCHEMES
    except ValueError:
        return False


def password(url: str) -> str | None:
    """Return the password the URL holds (in its user part or its query), if any."""
    try:
        parts = urlsplit(url)
        found = parts.password
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "password" and value:
                found = value
    except ValueError:
        return None
    return found or None


def redact(url: str) -> str:
    """Return the URL with its password replaced by ***, for lines an admin reads.

    postgresql://bot:s3cret@db:5432/bot -> postgresql://bot:***@db:5432/bot. A URL that cannot be
    parsed is not shown at all.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            netloc = f"{user}:{HIDDEN}@{host}" if colon else f"{user}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(key, HIDDEN if key in _SECRET_PARAMS else value) for key, value in pairs], safe="*/"
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "(a URL that cannot be read)"
