"""Uploaded files: a safe name, storage under the data directory with a byte cap, and the
checks that can be made before a run reads them (content vs name, zip safety)."""

import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from etl import archive, formats

NAME_CHARS = 100


class UploadTooLarge(ValueError):
    pass


def safe_name(name: str) -> str:
    """The client's file name reduced to one harmless path component, suffix kept."""
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^\w.\-]+", "_", base).strip("._") or "upload"
    stem, suffix = cleaned[: -len(PurePosixPath(cleaned).suffix) or None], PurePosixPath(cleaned).suffix
    return stem[: NAME_CHARS - len(suffix)] + suffix.lower()


def store(source: BinaryIO, target: Path, limit: int) -> str:
    """Copy an upload to `target` (at most `limit` bytes); return its SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with open(target, "wb") as sink:
            while block := source.read(1 << 20):
                size += len(block)
                if size > limit:
                    raise UploadTooLarge(f"the file is larger than the upload limit of {limit >> 20} MB")
                digest.update(block)
                sink.write(block)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def check(path: Path, name: str) -> None:
    """Raise ValueError when the file cannot be what its name says, or is an unsafe archive."""
    with open(path, "rb") as f:
        formats.check(name, f.read(4096))
    if Path(name).suffix.lower() == ".zip":
        archive.inspect(path)
