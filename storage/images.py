"""A content-addressed image store: files on disk, indexed in the `images` table.

An image's key is the sha256 of its bytes (64 lowercase hex characters), so storing
the same image twice is free. Files live at ``root/ab/cd/<key>.<ext>`` (the first
two byte pairs of the key as directories keep any one directory small).

Hashing and file I/O run in worker threads: images are several MB and the event
loop also has to keep the Discord gateway alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

from storage.db import Database

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/heic": "heic",
    "image/heif": "heif",
}
_KEY = re.compile(r"[0-9a-f]{64}")


def _check_key(key: str) -> None:
    # Keys become file names: anything but 64 lowercase hex chars could escape root.
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise ValueError(f"malformed image key {key!r}: expected 64 lowercase hex characters")


def _extension(mime: str) -> str:
    try:
        return _EXTENSIONS[mime]
    except KeyError:
        raise ValueError(f"unsupported image type {mime!r}; expected one of {sorted(_EXTENSIONS)}") from None


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomically(dest: Path, data: bytes) -> None:
    """Write `data` to `dest` so readers see either no file or the whole file."""
    if dest.exists():
        return  # same key, same bytes
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The temp file is in the destination directory so os.replace is a rename
    # within one filesystem, which is atomic.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # otherwise a power cut could leave a renamed but empty file
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ImageStore:
    def __init__(self, root: Path, db: Database) -> None:
        self._root = root
        self._db = db
        # Serialises put and prune, so a prune can't delete a file that a
        # concurrent put of the same bytes has just decided it needn't write.
        self._lock = asyncio.Lock()

    async def put(self, data: bytes, mime: str, *, width: int | None = None, height: int | None = None) -> str:
        """Store `data` and return its key. Storing the same bytes again is a no-op
        apart from refreshing the image's `created_at`, so `prune` keeps reused images.
        """
        _extension(mime)  # reject unknown types before doing any work
        key = await asyncio.to_thread(_sha256_hex, data)
        async with self._lock:
            # Row first, then file: if we crash in between, prune still finds the row
            # and cleans up; a file without a row would never be pruned.
            async with self._db.transaction() as conn:
                await conn.execute(
                    "INSERT INTO images (key, mime, bytes, width, height, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET created_at = excluded.created_at",
                    (key, mime, len(data), width, height, time.time()),
                )
                # The first put decides the mime (and so the file extension).
                row = await conn.fetchone("SELECT mime FROM images WHERE key = ?", (key,))
            assert row is not None
            dest = self._path_for(key, _extension(row[0]))
            await asyncio.to_thread(_write_atomically, dest, data)
        return key

    async def get(self, key: str) -> bytes:
        """The image's bytes. Raises FileNotFoundError if it isn't stored."""
        return await asyncio.to_thread(lambda: self.path(key).read_bytes())

    def path(self, key: str) -> Path:
        """Where the image's file is, e.g. for attaching it to a Discord message.

        Raises ValueError for a malformed key and FileNotFoundError if it isn't stored.
        """
        # The extension isn't part of the key, so look for each one (a few stat calls).
        for ext in _EXTENSIONS.values():
            candidate = self._path_for(key, ext)
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"no stored image with key {key}")

    async def mime_of(self, key: str) -> str:
        """The stored image's type. Raises FileNotFoundError if it isn't stored."""
        row = await self._db.fetchone("SELECT mime FROM images WHERE key = ?", (key,))
        if row is None:
            raise FileNotFoundError(f"no stored image with key {key}")
        return str(row[0])

    async def exists(self, key: str) -> bool:
        try:
            await asyncio.to_thread(self.path, key)
        except FileNotFoundError:
            return False
        return True

    async def prune(self, older_than_days: float, *, now: float | None = None) -> int:
        """Delete images stored (or last re-stored) more than `older_than_days` ago, except those a version of
        a character still uses (a character and a result made with it must stay reproducible).

        Returns how many were deleted. `now` overrides the current time, for tests.
        """
        if older_than_days < 0:
            raise ValueError(f"older_than_days must be >= 0, got {older_than_days}")
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        sql = (
            "SELECT key, mime FROM images WHERE created_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM character_version_images AS v WHERE v.image_key = images.key) "
            "AND NOT EXISTS (SELECT 1 FROM character_images AS c WHERE c.image_key = images.key)"
        )
        async with self._lock:
            old = [(str(key), str(mime)) for key, mime in await self._db.fetchall(sql, (cutoff,))]
            # Files first, then rows: if we crash in between, the next prune
            # retries the rows and their (already missing) files.
            paths = [self._path_for(key, _extension(mime)) for key, mime in old]
            await asyncio.to_thread(_unlink_all, paths)
            async with self._db.transaction() as conn:
                await conn.executemany("DELETE FROM images WHERE key = ?", [(key,) for key, _ in old])
        return len(old)

    async def delete(self, keys: list[str]) -> int:
        """Delete these images (files and rows); returns how many were stored. Unknown keys are ignored."""
        if not keys:
            return 0
        for key in keys:
            _check_key(key)
        async with self._lock:
            found: list[tuple[str, str]] = []
            for key in keys:
                row = await self._db.fetchone("SELECT mime FROM images WHERE key = ?", (key,))
                if row is not None:
                    found.append((key, str(row[0])))
            # Files first, then rows, as in prune: a crash in between leaves rows that a retry cleans up.
            await asyncio.to_thread(_unlink_all, [self._path_for(key, _extension(mime)) for key, mime in found])
            async with self._db.transaction() as conn:
                await conn.executemany("DELETE FROM images WHERE key = ?", [(key,) for key, _ in found])
        return len(found)

    def _path_for(self, key: str, ext: str) -> Path:
        _check_key(key)  # every path is built here, so this one check guards them all
        return self._root / key[0:2] / key[2:4] / f"{key}.{ext}"


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
