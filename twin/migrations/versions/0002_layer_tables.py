"""The built-in layers' tables, frozen as they were first specified.

A later change to a layer spec needs its own migration; tests check that the tables
and the specs agree.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = {
    "city_components": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"code" text NOT NULL',
        '"major_class" text',
        '"minor_class" text',
        '"class_name" text',
        '"status" text',
        '"owner_unit" text',
        '"street_code" text',
        '"installed_on" date',
        'geom geometry(Point, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (code)',
    ],
    "districts": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"code" text NOT NULL',
        '"name" text',
        '"level" text',
        'geom geometry(MultiPolygon, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (code)',
    ],
    "grids": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"code" text NOT NULL',
        '"name" text',
        '"street_code" text',
        'geom geometry(MultiPolygon, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (code)',
    ],
    "metro_lines": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"name" text NOT NULL',
        '"color" text',
        'geom geometry(MultiLineString, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (name)',
    ],
    "metro_stations": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"code" text NOT NULL',
        '"name" text',
        '"pinyin" text',
        '"lines" text',
        '"transfer" boolean',
        'geom geometry(Point, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (code)',
    ],
    "monitoring_stations": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"code" text NOT NULL',
        '"name" text',
        '"water_body" text',
        '"evaluation_type" text',
        '"station_type" text',
        '"target_class" integer',
        '"location_note" text',
        'geom geometry(Point, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (code)',
    ],
    "pollution_sources": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"credit_code" text NOT NULL',
        '"name" text',
        '"industry_code" text',
        '"industry_name" text',
        '"permit_class" text',
        '"key_unit" boolean',
        '"permit_id" text',
        '"address" text',
        'geom geometry(Point, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (credit_code)',
    ],
    "rivers": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"code" text NOT NULL',
        '"name" text',
        '"river_class" text',
        '"width_m" double precision',
        '"source" text',
        'geom geometry(MultiLineString, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (code)',
    ],
    "roads": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"code" text NOT NULL',
        '"name" text',
        '"road_class" text',
        '"lanes" integer',
        'geom geometry(MultiLineString, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (code)',
    ],
    "streets": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"code" text NOT NULL',
        '"name" text',
        '"district_code" text',
        'geom geometry(MultiPolygon, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (code)',
    ],
    "water_bodies": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"code" text NOT NULL',
        '"name" text',
        '"water_kind" text',
        '"source" text',
        'geom geometry(MultiPolygon, 4490) NOT NULL',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (code)',
    ],
    "water_quality": [
        'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
        '"station_code" text NOT NULL',
        '"observed_at" timestamptz NOT NULL',
        '"status" text',
        '"water_temp" double precision',
        '"ph" double precision',
        '"do" double precision',
        '"conductivity" double precision',
        '"turbidity" double precision',
        '"codmn" double precision',
        '"nh3n" double precision',
        '"tp" double precision',
        '"tn" double precision',
        '"water_class" integer',
        '"limiting" text',
        'version integer NOT NULL DEFAULT 1',
        'updated_at timestamptz NOT NULL DEFAULT now()',
        'UNIQUE (station_code, observed_at)',
    ],
}


def upgrade() -> None:
    for name, columns in TABLES.items():
        op.execute(f"CREATE TABLE layers.{name} (\n    " + ",\n    ".join(columns) + "\n)")
        if any(c.startswith("geom ") for c in columns):
            op.execute(f"CREATE INDEX {name}_geom_idx ON layers.{name} USING gist (geom)")


def downgrade() -> None:
    for name in TABLES:
        op.execute(f"DROP TABLE layers.{name}")
