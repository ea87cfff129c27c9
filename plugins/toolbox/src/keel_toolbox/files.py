"""``read_file`` and ``write_file``, confined to one folder.

Paths are relative to the folder. Absolute paths, ``..`` and symbolic links are refused: the path
is walked one component at a time with ``O_NOFOLLOW`` from a descriptor of the folder, so a link
(or a folder swapped for a link between a check and the open) cannot lead out.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import keel

__all__ = ["FileAccessError", "Folder"]


class FileAccessError(keel.ActionError):
    """A path the toolbox will not touch; the message says why and what to do instead."""

    code = "toolbox.file_access"


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Folder:
    """A folder the file actions may not leave."""

    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root).resolve()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise keel.StackError(f"keel-toolbox: root {str(self.root)!r} is not a folder; create it or set another")

    def parts(self, path: str) -> list[str]:
        if not path or not path.strip():
            raise FileAccessError("the path is empty; give a path relative to the workspace folder, e.g. 'notes.txt'")
        if "\x00" in path:
            raise FileAccessError("the path contains a NUL byte")
        if os.path.isabs(path) or path.startswith("~"):
            raise FileAccessError(
                f"absolute paths are refused ({path!r}); give a path relative to the workspace folder"
            )
        parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("", ".")]
        if ".." in parts:
            raise FileAccessError(f"path traversal is refused ({path!r}): '..' may not appear in a path")
        if not parts:
            raise FileAccessError(f"{path!r} names the workspace folder itself, not a file")
        return parts

    @contextmanager
    def _parent(self, parts: list[str], path: str, *, make: bool) -> Iterator[int]:
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for depth, part in enumerate(parts[:-1]):
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not make:
                        raise FileAccessError(
                            f"no such file: {path!r} (folder {'/'.join(parts[: depth + 1])!r} does not exist)"
                        ) from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as err:
                    raise self._refusal(err, "/".join(parts[: depth + 1]), path) from None
                os.close(fd)
                fd = next_fd
            yield fd
        finally:
            os.close(fd)

    def _refusal(self, err: OSError, part: str, path: str) -> FileAccessError:
        if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            return FileAccessError(
                f"{part!r} is a symbolic link or not a folder; links are not followed, so {path!r} is refused"
            )
        return FileAccessError(f"cannot open {path!r}: {err.strerror}")

    def read(self, path: str, max_bytes: int) -> dict[str, Any]:
        parts = self.parts(path)
        with self._parent(parts, path, make=False) as parent:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
            except FileNotFoundError:
                raise FileAccessError(f"no such file: {path!r}") from None
            except OSError as err:
                raise self._refusal(err, path, path) from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FileAccessError(f"{path!r} is not a regular file")
            data = handle.read(max_bytes + 1)
        truncated = len(data) > max_bytes
        data = data[:max_bytes]
        text = data.decode("utf-8", errors="replace")
        if truncated:
            text += f"\n[... truncated by keel-toolbox: the file has {info.st_size} bytes, {max_bytes} shown ...]"
        return {
            "path": "/".join(parts), "size": info.st_size, "text": text, "truncated": truncated,
            "binary": b"\x00" in data,
        }  # fmt: skip

    def write(
        self, path: str, content: str, mode: Literal["overwrite", "append", "create"], max_bytes: int
    ) -> dict[str, Any]:
        parts = self.parts(path)
        data = content.encode()
        if len(data) > max_bytes:
            raise FileAccessError(f"content of {len(data)} bytes is over the limit of {max_bytes} bytes")
        name = parts[-1]
        with self._parent(parts, path, make=True) as parent:
            try:
                existing = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                raise FileAccessError(f"{path!r} exists and is not a regular file (a link or a folder); refused")
            if existing is not None and mode == "create":
                raise FileAccessError(f"{path!r} already exists; use mode 'overwrite' or 'append'")
            if mode == "append":
                fd = os.open(
                    name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent
                )
                with os.fdopen(fd, "ab") as handle:
                    handle.write(data)
                    size = os.fstat(handle.fileno()).st_size
            else:  # write a temporary file beside it, then rename: a reader never sees half a file
                temp = f".{name}.keel-{os.getpid()}-{id(data)}.tmp"
                fd = os.open(
                    temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent
                )
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                    if mode == "create":
                        os.link(temp, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
                        os.unlink(temp, dir_fd=parent)
                    else:
                        os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
                except BaseException:
                    try:
                        os.unlink(temp, dir_fd=parent)
                    except FileNotFoundError:
                        pass
                    raise
                size = len(data)
        return {"path": "/".join(parts), "bytes_written": len(data), "size": size, "mode": mode}
