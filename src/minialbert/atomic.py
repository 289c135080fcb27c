"""Atomic writes: a reader (or a killed run) never sees half a file or half a folder.

Everything the pipeline produces goes through these helpers: write to a temporary sibling, flush,
then `os.replace`, which is atomic on POSIX within one file system. Around that:

- Temporary siblings are named `.<name>.<host>-<pid>.<random>.tmp`. A SIGKILL cannot clean up,
  so the next writer of the same path removes the siblings of processes on this host that are
  gone (a preempted job would otherwise leave a checkpoint-sized file behind at every kill).
- A full disk or quota is a `DiskFullError`: one line naming the path, nothing replaced.
- A path that would replace the working directory or a parent of it (`results/distill/..`) is
  refused, whatever produced it.
- Outputs get the permissions of an ordinary file or folder (the umask's), not the 0600/0700 of
  `tempfile`, so a shared project folder stays readable.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import StageError

HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "os error 28")
# below this many free bytes, a failed write is taken as a full disk: torch.save reports ENOSPC
# as RuntimeError("... unexpected pos ..."), with no errno to go by
NEARLY_FULL_BYTES = 1 << 20


class DiskFullError(StageError, OSError):
    """The disk (or the quota) filled up while writing `path`; the previous version is kept."""

    def __init__(self, path: str | os.PathLike, cause: BaseException):
        reason = getattr(cause, "strerror", None) or (str(cause).splitlines() or [type(cause).__name__])[0]
        super().__init__(
            errno.ENOSPC,
            f"no space left on device while writing {path} ({reason}); nothing was replaced "
            f"(an earlier version, if any, is intact): free some space and rerun",
            str(path),
        )

    def __str__(self) -> str:
        return self.strerror


# ---- the temporary siblings -------------------------------------------------------------------

def _prefix(path: Path) -> str:
    return f".{path.name}.{HOST}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of `path` left by dead processes of this host; returns them."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{re.escape(HOST)}-(\d+)\.[^.]+\.(?:tmp|old)$")
    removed = []
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            m = pattern.match(entry.name)
            if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
                continue
            stale = Path(entry.path)
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
                removed.append(stale)
    return removed


@functools.cache
def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _work_dir_or_a_parent(path: Path) -> bool:
    try:
        target, cwd = path.resolve(), Path.cwd().resolve()
    except OSError:  # no working directory left: nothing to protect
        return False
    return target == cwd or target in cwd.parents


def _prepare(path: str | os.PathLike) -> Path:
    """Check the target, create its folder, clear what dead writers left beside it."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ValueError(f"output path {str(path)!r} names a folder above its parent, not an "
                         f"output; refusing to write to it")
    if _work_dir_or_a_parent(path):
        raise ValueError(f"output path {str(path)!r} is the working directory or one of its "
                         f"parents; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    return path


def _new_file(path: Path) -> tuple[int, Path]:
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, Path(tmp)


def _disk_full(err: BaseException, folder: Path) -> bool:
    chain, seen = err, set()
    while chain is not None and id(chain) not in seen:  # the error or what it was raised from
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(chain) for text in DISK_FULL_TEXT):
            return True
        chain = chain.__cause__ or chain.__context__
    if isinstance(err, (OSError, RuntimeError)):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    return False


@contextlib.contextmanager
def _reported(path: Path) -> Iterator[None]:
    """Re-raise a full disk as DiskFullError naming `path` (checked before temporaries go)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if _disk_full(err, path.parent):
            raise DiskFullError(path, err) from err
        raise


# ---- files ------------------------------------------------------------------------------------

def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = _prepare(path)
    fd, tmp = _new_file(path)
    try:
        with _reported(path), os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; it replaces `path` only if the block succeeds."""
    path = _prepare(path)
    fd, tmp = _new_file(path)
    os.close(fd)
    try:
        with _reported(path):
            yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---- folders ----------------------------------------------------------------------------------

def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path`, moving an existing `path` aside first.

    Written as a loop so that two writers racing for the same path both succeed (the last one
    wins) instead of one failing half-way; the previous folder is removed only afterwards, and
    put back if the rename fails.
    """
    aside: list[Path] = []
    try:
        for _ in range(100):
            try:
                os.replace(tmp, path)
                break
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise
            old = path.with_name(f"{_prefix(path)}{secrets.token_hex(4)}.old")
            with contextlib.suppress(FileNotFoundError):  # gone already: another writer moved it
                os.replace(path, old)
                aside.append(old)
        else:
            raise OSError(errno.EBUSY, f"could not move {tmp} into place: {path} keeps reappearing")
    except BaseException:
        if aside and not os.path.lexists(path):
            with contextlib.suppress(OSError):
                os.replace(aside.pop(), path)
        raise
    finally:
        for old in aside:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; on success it becomes `path` (replacing it).

    On any error (or KeyboardInterrupt) the temporary folder is removed and `path` is untouched,
    so a failed stage leaves no partial output behind.
    """
    path = _prepare(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        with _reported(path):
            yield tmp
        _move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
