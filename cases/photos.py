"""Case photos: JPEG or PNG by content (whatever the name or Content-Type says), bounded, re-encoded without
metadata, stored outside the database by the SHA-256 of what was stored.

Limits (docs/cases.md): at most MAX_BYTES a photo as sent, at most MAX_SIDE pixels a side and MAX_PIXELS in all,
checked from the header before any pixel is decoded (a decompression bomb never gets decoded). The pixels are
turned upright by their EXIF orientation and written anew: no EXIF (GPS position, camera serial), ICC or text
chunk of the original survives. Files go to $TWIN_DATA_DIR/case-photos/<2 hex>/<sha256>.<ext>, written to a
temporary name, flushed to disk and renamed, so a photo acknowledged is a photo stored.
"""

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageOps, UnidentifiedImageError

from twin.errors import ApiError

MAX_BYTES = 5 << 20
MAX_SIDE = 8000
MAX_PIXELS = 24_000_000
FORMATS = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png")}
PER_REPORT = 3  # photos sent inside one report


class Photo(NamedTuple):
    sha256: str
    content_type: str
    content: bytes
    width: int
    height: int


def _refuse(code: str, detail: str, where: str, status: int = 422) -> ApiError:
    return ApiError(status, code, detail, where=where)


def _reencoded(image: Image.Image, kind: str) -> bytes:
    upright = ImageOps.exif_transpose(image)
    out = io.BytesIO()
    if kind == "JPEG":
        upright.convert("RGB").save(out, "JPEG", quality=88, optimize=True)
    else:
        mode = upright.mode if upright.mode in ("1", "L", "LA", "RGB", "RGBA", "P") else "RGBA"
        upright.convert(mode).save(out, "PNG", optimize=False)
    return out.getvalue()


def accept(content: bytes, where: str = "body") -> Photo:
    """The photo to store for `content`, or a 4xx saying why not."""
    if len(content) > MAX_BYTES:
        raise _refuse("photo_too_large", f"A photo may have at most {MAX_BYTES >> 20} MB; this one has "
                      f"{len(content) / (1 << 20):.1f} MB.", where, 413)
    if not content:
        raise _refuse("empty_photo", "The photo is empty.", where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content), formats=list(FORMATS))  # reads the header only
        kind = image.format
        width, height = image.size
        if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
            raise _refuse("photo_too_big", f"A photo may have at most {MAX_SIDE} pixels a side and {MAX_PIXELS:,} "
                          f"in all; this one is {width} x {height}.", where)
        image.load()
        stored = _reencoded(image, kind)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _refuse("photo_too_big", f"A photo may have at most {MAX_PIXELS:,} pixels.", where) from None
    except UnidentifiedImageError:
        raise _refuse("not_a_photo", "Only JPEG and PNG photos are accepted (checked by their content), within "
                      f"{MAX_SIDE} pixels a side.", where, 415) from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt image data
        raise _refuse("broken_photo", f"The photo cannot be decoded: {e}.", where) from None
    content_type, _ = FORMATS[kind]
    return Photo(hashlib.sha256(stored).hexdigest(), content_type, stored, width, height)


def path_of(data_dir: Path, sha256: str, content_type: str) -> Path:
    extension = next(ext for ct, ext in FORMATS.values() if ct == content_type)
    return data_dir / "case-photos" / sha256[:2] / f"{sha256}.{extension}"


def store(data_dir: Path, photo: Photo) -> Path:
    """Write the photo durably (once: the name is its content's hash)."""
    path = path_of(data_dir, photo.sha256, photo.content_type)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as f:
        f.write(photo.content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path
