"""Can the bot's own user create and write the database file? Said in one line, with the fix."""

from __future__ import annotations

import os
import stat
from pathlib import Path

# SQLite writes two files beside the database in WAL mode; the bot must be able to create and write them.
SIDE_FILE_SUFFIXES = ("-wal", "-shm")
# The bot's own lock file beside the database (use_lock.py).
LOCK_SUFFIX = ".lock"


def running_as() -> tuple[int, int]:
    """Return the uid and gid this process runs as."""
    return os.getuid(), os.getgid()


def storage_problem(path: Path, *, setting: str = "DATABASE_PATH") -> str | None:
    """Return why the bot cannot keep its database at `path` (one line naming the fix), or None.

    Creates the folder when it is missing, as the bot does at start.
    """
    if path.is_dir():
        return f"{setting} {path} is a folder, not a file: point it at a file inside it, e.g. {path / 'bot.sqlite3'}"
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        return f"{setting} {path} cannot be created: {blocker} is a file, not a folder; point {setting} elsewhere or move that file"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        return _cannot_write(setting, path, _nearest_existing(path.parent))
    except OSError as exc:
        return f"{setting} {path}: its folder cannot be created ({exc.strerror})"
    if not _may(path.parent, os.W_OK | os.X_OK):
        return _cannot_write(setting, path, path.parent)
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILE_SUFFIXES)):
        if candidate.exists() and not _may(candidate, os.R_OK | os.W_OK):
            return _cannot_write(setting, path, candidate)
    # The lock file that tells a restore the database is in use (use_lock.py): reading it is enough.
    lock = path.with_name(path.name + LOCK_SUFFIX)
    if lock.exists() and not _may(lock, os.R_OK):
        return _cannot_write(setting, path, lock)
    return None


def _may(path: Path, mode: int) -> bool:
    """Tell whether this process may access `path` so, judged as it will open files: by its effective ids."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _file_in_the_way(folder: Path) -> Path | None:
    """Return the first part of `folder` that exists but is not a folder."""
    for part in reversed((folder, *folder.parents)):
        if part.exists() and not part.is_dir():
            return part
    return None


def _nearest_existing(folder: Path) -> Path:
    for part in (folder, *folder.parents):
        if part.exists():
            return part
    return folder


def _cannot_write(setting: str, path: Path, culprit: Path) -> str:
    """Say who owns what the bot cannot write, as whom the bot runs, and the command that fixes it."""
    uid, gid = running_as()
    info = culprit.stat()
    what = "folder" if culprit.is_dir() else "file"
    mode = stat.S_IMODE(info.st_mode)
    folder = culprit if culprit.is_dir() else culprit.parent
    # Ours already but not writable is a mode problem; anyone else's is an owner problem. For a
    # bind-mounted folder the chown is run on the host, on the folder that was mounted.
    fix = f"chmod u+rwX {culprit}" if info.st_uid == uid else f"chown -R {uid}:{gid} {folder}"
    # Inside a container the path is the container's: for a bind mount the fix is run on the host folder.
    where = " (for a bind-mounted folder, on the host's folder)" if in_container() else ""
    return (
        f"{setting} {path} cannot be written: the {what} {culprit} belongs to uid {info.st_uid} "
        f"(mode {mode:o}) and the bot runs as uid {uid}; fix it with `{fix}`{where}"
    )


def in_container() -> bool:
    """Tell whether this process runs in a Docker (or Podman) container."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
