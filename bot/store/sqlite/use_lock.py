"""Who is using the database file: a lock beside it, shared by its users, exclusive for a restore.

The lock is `flock` on `<database>.lock`: the kernel drops it when its process ends, however it ends,
so a bot that crashed or was killed never blocks a restore, and a live one always does. It works
across containers that share the volume, as they share the kernel.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from bot.store.sqlite.file_access import LOCK_SUFFIX


class DatabaseBusy(Exception):
    """Another process holds the lock in a way that excludes this use; the text is one line."""


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + LOCK_SUFFIX)


class UseLock:
    """A held lock on a database file; release it (or let the process end) to let others in."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def shared(cls, database: Path) -> UseLock:
        """Take the lock a running bot, a check or a backup holds; refused only during a restore."""
        return cls._take(
            database, fcntl.LOCK_SH, "a restore of {db} is under way; start again when it is done"
        )

    @classmethod
    def exclusive(cls, database: Path) -> UseLock:
        """Take the lock a restore needs; refused while anything else uses the database."""
        return cls._take(
            database,
            fcntl.LOCK_EX,
            "{db} is in use by a running bot (or a check or backup): stop the bot first "
            "(docker compose stop bot, or Ctrl-C), then restore",
        )

    @classmethod
    def _take(cls, database: Path, mode: int, refusal: str) -> UseLock:
        path = lock_path(database)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            # Made by another user (a `backup` or `restore` run as root before the bot's first start):
            # flock needs only an open file, so reading it is enough.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseBusy(refusal.format(db=database)) from None
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
