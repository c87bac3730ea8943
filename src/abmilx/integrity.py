"""Checks of a file's size and header before it is mapped or unpickled.

A truncated LMDB file is mapped past its end and the first read of a missing page kills the
process with SIGBUS; a truncated torch checkpoint fails deep inside its zip reader. Both are
turned into a `DamagedFileError` whose message names the file and what is wrong with it
(docs/recovery-integrity.md lists the messages).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LMDB_MAGIC = 0xBEEFC0DE
LMDB_VERSION = 1
# MDB_meta after the 16-byte page header (64-bit build): magic, version (u32 each) at 16, the
# free DB's md_pad (the page size) at 40, mm_last_pg and mm_txnid (u64 each) at 136.
_MAGIC_AT, _PAGE_SIZE_AT, _LAST_PAGE_AT = 16, 40, 136
_META_BYTES = 152


@contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """A path beside ``path`` to write to, renamed onto ``path`` when the block ends without an
    error: a reader, or a rerun deciding what is done, sees the whole file or none (a process
    killed mid-write leaves only ``<name>.partial``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


class DamagedFileError(ValueError):
    """A file is truncated, zeroed or otherwise not what its reader expects."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON object the workflow wrote (QC record, metrics, manifest); one that is damaged (cut
    short, emptied, edited) is named with what is wrong instead of failing in the JSON parser."""
    try:
        value = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFileError(path, f"not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise DamagedFileError(path, f"holds a JSON {type(value).__name__}, not an object")
    return value


def _lmdb_meta(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """(page size, last page number, transaction id) of the meta page at `offset`, or None."""
    if len(data) < offset + _META_BYTES:
        return None
    magic, version = struct.unpack_from("<II", data, offset + _MAGIC_AT)
    if magic != LMDB_MAGIC or version != LMDB_VERSION:
        return None
    (page_size,) = struct.unpack_from("<I", data, offset + _PAGE_SIZE_AT)
    last_page, txnid = struct.unpack_from("<QQ", data, offset + _LAST_PAGE_AT)
    return page_size, last_page, txnid


def check_lmdb_file(path: str | Path) -> None:
    """Raise DamagedFileError unless `path` is an LMDB data file as long as its meta pages say.

    LMDB keeps two meta pages (0 and 1) and uses the one with the later transaction; its last
    page number fixes the smallest size a complete file has."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise DamagedFileError(path, "empty file (0 bytes), not an LMDB store")
    with open(path, "rb") as handle:
        head = handle.read(_META_BYTES)
        first = _lmdb_meta(head, 0)
        if first is None:
            raise DamagedFileError(path, "no LMDB header (zeroed, overwritten or not LMDB)")
        handle.seek(first[0])
        second = _lmdb_meta(handle.read(_META_BYTES), 0)
    page_size, last_page, _ = max(
        (meta for meta in (first, second) if meta is not None), key=lambda meta: meta[2]
    )
    needed = (last_page + 1) * page_size
    if size < needed:
        raise DamagedFileError(
            path, f"truncated LMDB store: {size} bytes, its header records {needed}"
        )


def check_torch_file(path: str | Path) -> None:
    """Raise DamagedFileError unless `path` is a complete torch.save zip archive."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise DamagedFileError(path, "empty file (0 bytes), not a torch checkpoint")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04":
        raise DamagedFileError(
            path, "not a torch checkpoint (no zip header: zeroed or overwritten)"
        )
    if not zipfile.is_zipfile(path):
        raise DamagedFileError(path, f"truncated torch checkpoint ({size} bytes, no zip directory)")


def load_torch_file(path: str | Path, *, weights_only: bool = False) -> Any:
    """torch.load on CPU after `check_torch_file`; any reader error becomes DamagedFileError."""
    import pickle

    import torch

    check_torch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DamagedFileError(path, f"unreadable torch checkpoint ({reason})") from error
