"""Case photos: by content, bounded (bytes, pixels, decompression bombs), re-encoded without EXIF, stored by hash
outside the database and served with access checks."""

import io
import struct
import zlib

import httpx
import pytest
from PIL import Image

from cases.photos import MAX_BYTES
from tests.case_support import fresh, jpeg_with_gps, key, places, report


@pytest.fixture(scope="module")
def case(server, engine):
    keys = {"supervisor": key(engine, "数字城管指挥中心", "supervisor"),
            "elsewhere": key(engine, "数字城管指挥中心", "supervisor", grids=["000000000000"])}
    place = places(engine, 1)[0]
    with httpx.Client(base_url=server, timeout=30) as client:
        created = report(client, fresh(place), "E0108", headers=keys["supervisor"])
    assert created.status_code == 201, created.text
    return created.json()["case_no"], keys


def png_bomb(width=60_000, height=60_000) -> bytes:
    """A PNG whose header claims 3.6 billion pixels, in a few hundred bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


def test_a_photo_is_reencoded_without_exif_and_served_to_keys_in_scope(http, case, data_dir):
    no, keys = case
    original = jpeg_with_gps()
    assert Image.open(io.BytesIO(original)).getexif().get(0x8825)  # the GPS position is there on the way in
    added = http.post(f"/cases/{no}/photos", content=original,
                      headers=keys["supervisor"] | {"Content-Type": "application/octet-stream"})
    assert added.status_code == 201, added.text
    photo = added.json()
    assert photo["content_type"] == "image/jpeg" and (photo["width"], photo["height"]) == (64, 48)
    served = http.get(photo["href"], headers=keys["supervisor"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    assert not Image.open(io.BytesIO(served.content)).getexif()
    assert b"TestCam" not in served.content
    stored = list((data_dir / "case-photos").rglob(f"{photo['sha256']}.jpg"))
    assert len(stored) == 1 and stored[0].read_bytes() == served.content
    assert http.get(photo["href"]).status_code == 401
    assert http.get(photo["href"], headers=keys["elsewhere"]).status_code == 403


@pytest.mark.parametrize("content, status, code", [
    (png_bomb(), 422, "photo_too_big"),
    (b"GIF89a" + b"\0" * 100, 415, "not_a_photo"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "not_a_photo"),
    (jpeg_with_gps()[:200], 422, "broken_photo"),
    (b"\xff\xd8" + b"\0" * (MAX_BYTES + 1), 413, "photo_too_large"),
], ids=["decompression-bomb", "gif", "svg", "truncated-jpeg", "oversize"])
def test_bad_photos_are_refused_by_content(http, case, content, status, code):
    no, keys = case
    response = http.post(f"/cases/{no}/photos", content=content,
                         headers=keys["supervisor"] | {"Content-Type": "image/jpeg"})
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_a_png_keeps_its_pixels(http, case):
    no, keys = case
    out = io.BytesIO()
    Image.new("RGBA", (10, 10), (0, 128, 255, 128)).save(out, "PNG")
    added = http.post(f"/cases/{no}/photos", content=out.getvalue(), headers=keys["supervisor"])
    assert added.status_code == 201 and added.json()["content_type"] == "image/png"
    served = Image.open(io.BytesIO(http.get(added.json()["href"], headers=keys["supervisor"]).content))
    assert served.getpixel((5, 5)) == (0, 128, 255, 128)
