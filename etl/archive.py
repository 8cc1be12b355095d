"""Zipped datasets, opened safely: no path traversal, no zip bombs.

The archive's directory is checked before anything is decompressed (member paths,
total size, compression ratio); the chosen dataset's members are then extracted
under fixed names with a byte cap, so an archive that lies about its sizes is caught
while decompressing, not after filling the disk.
"""

import zipfile
from pathlib import Path, PurePosixPath

from etl.formats import VECTORS

MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 4 << 30  # uncompressed, all members together
MAX_RATIO = 200  # uncompressed / compressed, for members big enough to matter
RATIO_FLOOR_BYTES = 1 << 20
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")
DATASETS = {s for s in VECTORS if s != ".zip"}


class ArchiveError(ValueError):
    """The archive is unsafe or holds no dataset we can read; the message says which."""


def inspect(path: Path) -> list[zipfile.ZipInfo]:
    """The archive's file members, after checking paths and sizes (nothing is decompressed)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
    except zipfile.BadZipFile as e:
        raise ArchiveError(f"{path.name} is not a readable ZIP archive: {e}") from e
    if len(members) > MAX_MEMBERS:
        raise ArchiveError(f"{path.name} holds {len(members)} files; at most {MAX_MEMBERS} are accepted")
    for m in members:
        name = m.filename.replace("\\", "/")
        if name.startswith("/") or ".." in PurePosixPath(name).parts or ":" in name.split("/")[0]:
            raise ArchiveError(f"{path.name} contains an unsafe path {m.filename!r}; refusing to read it")
        if m.file_size > RATIO_FLOOR_BYTES and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise ArchiveError(f"{path.name}: {m.filename!r} expands {m.file_size // max(m.compress_size, 1)}-fold "
                               f"(more than {MAX_RATIO}×); refusing a possible zip bomb")
    total = sum(m.file_size for m in members)
    if total > MAX_TOTAL_BYTES:
        raise ArchiveError(f"{path.name} expands to {total / 2**30:.1f} GiB; at most {MAX_TOTAL_BYTES >> 30} GiB "
                           "uncompressed are accepted")
    return members


def _choose(path: Path, members: list[zipfile.ZipInfo], layer: str | None) -> tuple[str, list[zipfile.ZipInfo]]:
    """The dataset to read (its stem and suffix) and the members that make it up."""
    datasets = [m for m in members if PurePosixPath(m.filename).suffix.lower() in DATASETS
                and not PurePosixPath(m.filename).name.startswith(".")]  # skip macOS "._x.shp" forks
    if layer:
        named = [m for m in datasets if PurePosixPath(m.filename).stem == layer]
        if not named and len(datasets) != 1:
            raise ArchiveError(f"{path.name} has no dataset named {layer!r}; it holds: "
                               f"{', '.join(m.filename for m in datasets) or 'none'}")
        datasets = named or datasets
    if not datasets:
        names = ", ".join(m.filename for m in members[:10])
        raise ArchiveError(f"{path.name} holds no Shapefile or other vector dataset (found: {names or 'nothing'})")
    if len(datasets) > 1:
        raise ArchiveError(f"{path.name} holds several datasets ({', '.join(m.filename for m in datasets)}); "
                           "choose one with --source-layer (HTTP: source_layer) by its name without suffix")
    main = datasets[0]
    stem = main.filename[: -len(PurePosixPath(main.filename).suffix)]
    if PurePosixPath(main.filename).suffix.lower() != ".shp":
        return main.filename, [main]
    parts = [m for m in members if m.filename[: len(stem)] == stem
             and m.filename[len(stem):].lower() in SHAPEFILE_PARTS]
    return main.filename, parts


def extract(path: Path, layer: str | None, into: Path) -> Path:
    """Extract the chosen dataset into `into` under safe names; return the path to open."""
    members = inspect(path)
    main, parts = _choose(path, members, layer)
    target = None
    try:
        with zipfile.ZipFile(path) as archive:
            for m in parts:
                out = into / f"dataset{PurePosixPath(m.filename).suffix.lower()}"
                with archive.open(m) as source, open(out, "wb") as sink:
                    copied = _copy_capped(source, sink, m.file_size)
                if copied != m.file_size:
                    raise ArchiveError(f"{path.name}: {m.filename!r} does not hold the size it declares")
                if m.filename == main:
                    target = out
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:  # corrupt, unsupported method, encrypted
        raise ArchiveError(f"{path.name} cannot be unpacked: {e}") from e
    return target


def _copy_capped(source, sink, limit: int) -> int:
    copied = 0
    while block := source.read(1 << 20):
        copied += len(block)
        if copied > limit:
            break
        sink.write(block)
    return copied

