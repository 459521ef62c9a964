"""Where export artifacts and import staging files live.

A small interface so that an object store can replace the directory without
touching workflows or activities: they only name artifacts by key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol


class ArtifactStore(Protocol):
    def path(self, key: str) -> Path: ...

    def open_append(self, key: str, truncate_to: int | None = None) -> BinaryIO: ...

    def open_read(self, key: str) -> BinaryIO: ...

    def publish(self, key: str, final_key: str) -> None: ...

    def size(self, key: str) -> int | None: ...

    def delete(self, key: str) -> None: ...


class DirectoryStore:
    """Artifacts as files under one directory (``<data-dir>/exports`` or ``EXPORT_DIR``).

    Workers on several hosts need that directory shared (a volume).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"not an artifact key: {key!r}")
        return self.root / key

    def open_append(self, key: str, truncate_to: int | None = None) -> BinaryIO:
        """Open for appending; ``truncate_to`` first cuts what a crashed attempt left."""
        path = self.path(key)
        handle = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115 - caller closes
        handle.truncate(truncate_to or 0)
        handle.seek(0, os.SEEK_END)
        return handle

    def open_read(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")  # noqa: SIM115 - caller closes

    def publish(self, key: str, final_key: str) -> None:
        """Atomically and durably give a finished artifact its final name: the file's
        data, then the directory entry, reach the disk before this returns (an offload
        drops the collection once its artifact is published and recorded)."""
        with open(self.path(key), "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.path(key), self.path(final_key))
        directory = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
