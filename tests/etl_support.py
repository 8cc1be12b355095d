"""Helpers for the ETL tests: a private, migrated database per test module (the ETL tests write to
layers that other modules count), component codes, and what a load stored."""

import io
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import psycopg
import pyproj
from sqlalchemy import create_engine, text

from layers.codes import component_classes
from tests.server_support import logged_server
from twin.db import migrate

GEOD = pyproj.Geod(ellps="WGS84")
REPO = Path(__file__).resolve().parent.parent
COUNTY = "320214"  # 新吴区


def empty_database(database_url: str, name: str) -> str:
    """A fresh, empty database `name` in the test cluster."""
    base, _ = database_url.rsplit("/", 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def private_database(database_url: str, name: str) -> str:
    """A fresh database `name` in the test cluster, migrated to head."""
    url = empty_database(database_url, name)
    migrate(url=url)
    return url


def zipped(members: dict[str, bytes]) -> bytes:
    """A zip archive of the given members (name → content)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def drop_database(database_url: str, name: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def engine_for(url: str):
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                         connect_args={"options": "-c timezone=UTC"})


def component_codes(first: int, n: int) -> list[str]:
    """n valid 16-digit component ids with serials from `first`."""
    classes = component_classes()
    return [f"{COUNTY}{classes[i % len(classes)].major_code}{classes[i % len(classes)].minor_code}{first + i:06d}"
            for i in range(n)]


def district_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(120.33, 120.57, n), rng.uniform(31.46, 31.61, n)


def stored_points(engine, codes: list[str]) -> dict[str, tuple[float, float]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT code, ST_X(geom), ST_Y(geom) FROM layers.city_components "
                                 "WHERE code = ANY(:codes)"), {"codes": codes}).all()
    return {code: (x, y) for code, x, y in rows}


def max_offset_m(engine, codes: list[str], lon: np.ndarray, lat: np.ndarray) -> float:
    """The largest distance between the stored points of `codes` and the expected lon/lat (all must be stored)."""
    stored = stored_points(engine, codes)
    assert set(stored) == set(codes), f"missing: {sorted(set(codes) - set(stored))[:5]}"
    x = np.array([stored[c][0] for c in codes])
    y = np.array([stored[c][1] for c in codes])
    return float(np.max(GEOD.inv(x, y, lon, lat)[2]))


def run_row(engine, run_id: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT * FROM twin.etl_run WHERE id = :id"), {"id": run_id}).mappings().one())


def quarantine(engine, run_id: int) -> dict[int, tuple[str, dict]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT row_number, reason, record FROM twin.quarantine WHERE run_id = :id"),
                            {"id": run_id}).all()
    return {row: (reason, record) for row, reason, record in rows}


def change_count(engine, run_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM twin.change WHERE run_id = :id"), {"id": run_id}).scalar_one()


@contextmanager
def serve(database_url: str, data_dir: Path, **settings: str):
    """The real app under uvicorn on a free port, on the given database, with extra TWIN_ settings."""
    with logged_server(database_url, data_dir, data_dir / f"etl-server-{time.monotonic_ns()}.log", **settings) as base:
        yield base


def database_fixture(name: str):
    """A module-scoped fixture: an engine on a private database `name`, dropped afterwards."""

    @pytest.fixture(scope="module")
    def db(database_url):
        engine = engine_for(private_database(database_url, name))
        yield engine
        engine.dispose()
        drop_database(database_url, name)

    return db
