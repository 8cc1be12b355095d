"""Helpers of the case-loop tests: keys of each role, places in the district, cases taken through the loop."""

import io
from PIL import Image
from sqlalchemy import text

from twin.auth import create_key

def key(engine, department: str, role: str | None, layers: list[str] = (), **scope) -> dict:
    with engine.begin() as conn:
        secret = create_key(conn, department, list(layers), role=role, **scope)
    return {"Authorization": f"Bearer {secret}"}


def places(engine, count: int = 6) -> list[dict]:
    """Grids (one per street first) with their street and spots inside them (`fresh` hands them out)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT code, street_code, ST_X(p) AS lon, ST_Y(p) AS lat, "
            "       (SELECT array_agg(ARRAY[ST_X(s.geom), ST_Y(s.geom)]) FROM ST_Dump(ST_GeneratePoints(g.geom, 60, 7)) s) "
            "       AS spots FROM ("
            "  SELECT code, street_code, geom, ST_PointOnSurface(geom) AS p, "
            "         row_number() OVER (PARTITION BY street_code ORDER BY ST_Area(geom) DESC) AS n "
            "  FROM layers.grids) g ORDER BY n, code LIMIT :count"), {"count": count}).all()
    return [{"grid": r.code, "street": r.street_code, "lon": r.lon, "lat": r.lat, "spots": list(r.spots)}
            for r in rows]


def fresh(place: dict) -> dict:
    """A spot inside the place's grid that no other report of the run used."""
    lon, lat = place["spots"].pop()
    return place | {"lon": lon, "lat": lat}


def report(http, place: dict, class_code: str = "E0102", headers: dict | None = None, **extra):
    body = {"class_code": class_code, "lon": place["lon"], "lat": place["lat"], "description": "测试"} | extra
    return http.post("/cases", json=body, headers=headers or {})


def step(http, case_no: str, action: str, headers: dict, **extra):
    return http.post(f"/cases/{case_no}/steps", json={"action": action} | extra, headers=headers)


def jpeg_with_gps(size=(64, 48)) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x8825] = {1: "N", 2: (31.0, 30.0, 0.0), 3: "E", 4: (120.0, 24.0, 0.0)}  # GPSInfo: the reporter's position
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()
