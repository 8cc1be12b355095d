"""Online pollution sources as SensorThings: every key discharger (环境监管重点单位, `key_unit`) of the
`pollution_sources` layer reports online, so it is a Thing with the device number (MN) of its main wastewater
outlet's data logger, its Location and FeatureOfInterest at the source's point, and one Datastream per factor
its online monitoring system reports over HJ 212 (sensing/data/online_factors.toml, each Datastream's
`properties.hj212_code`), which is what the HJ 212 listener looks a packet's MN and factors up by.

The MN is the unit's unified social credit code followed by its outlet's permit code DW001 (23 characters, within
the standard's 24). `refresh` makes what is missing and follows renames and moves; it runs at start-up, as the
stations' refresh does (sensing.things). A source that stops being a key unit keeps its Thing and its history.
"""

import tomllib
from functools import cache
from pathlib import Path

from sqlalchemy.engine import Connection

from sensing import things
from sensing import water_quality as wq

LAYER = "pollution_sources"
OUTLET = "DW001"
SENSOR = "污染源在线监测系统 (pollution source online monitoring system)"
FACTORS = Path(__file__).parent / "data" / "online_factors.toml"
UCUM = {"": "[pH]", "mg/L": "mg/L", "L/s": "L/s"}


@cache
def online_factors() -> dict[str, dict]:
    """Factor code -> {name, unit, limit or low/high}."""
    with open(FACTORS, "rb") as f:
        return tomllib.load(f)["factors"]


def mn_of(credit_code: str) -> str:
    return credit_code + OUTLET


def unit_of(unit: str) -> dict:
    return {"name": unit or "pH", "symbol": UCUM.get(unit, unit), "definition": "http://unitsofmeasure.org/ucum.html"}


def kind() -> things.Kind:
    streams = tuple(things.Stream(code, f["name"], unit_of(f["unit"]), wq.MEASUREMENT,
                                  wq.observed_property_definition(code), f"{f['name']} (HJ 212-2017 {code})")
                    for code, f in online_factors().items())
    return things.Kind(
        layer=LAYER, key="hj212_mn", key_of="s.credit_code || CAST(:outlet AS text)", where="s.key_unit",
        properties="jsonb_build_object('fid', s.fid, 'credit_code', s.credit_code, 'outlet', CAST(:outlet AS text), "
                   "'permit_id', s.permit_id, 'industry_code', s.industry_code, 'industry_name', s.industry_name)",
        description="s.address", sensor=(SENSOR, "HJ 353/HJ 355 水污染源在线监测系统"), location=f"outlet {OUTLET}",
        stream_key="hj212_code", streams=streams, parameters={"outlet": OUTLET})


def refresh(conn: Connection) -> None:
    """Make the online sources' Things, Locations, FeaturesOfInterest and Datastreams (idempotent), in the
    caller's transaction."""
    things.refresh(conn, kind())
