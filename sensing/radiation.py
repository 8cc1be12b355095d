"""Radiation monitoring points as SensorThings: every feature of the `radiation_points` layer is a Thing
(`properties.point_code`, its code) with its Location at the point and one Datastream (`properties.quantity`), the
environmental gamma air-absorbed dose rate in nGy/h (HJ 1157-2021; accumulated-dose points report the dose rate
their dosimeters averaged over the period). Kept in step with the layer by `refresh` (sensing.things).
"""

from sqlalchemy.engine import Connection

from sensing import things
from sensing import water_quality as wq

LAYER = "radiation_points"
DOSE_RATE = things.Stream(
    "gamma_dose_rate", "环境γ辐射空气吸收剂量率 (gamma air-absorbed dose rate)",
    {"name": "nanogray per hour", "symbol": "nGy/h", "definition": "http://unitsofmeasure.org/ucum.html"},
    wq.MEASUREMENT, "urn:twin:radiation:gamma_dose_rate",
    "环境γ辐射空气吸收剂量率, 1 m above the ground (HJ 1157-2021), cosmic-ray response included")
KIND = things.Kind(
    layer=LAYER, key="point_code", key_of="s.code",
    properties="jsonb_build_object('fid', s.fid, 'point_type', s.point_type, 'purpose', s.purpose, "
               "'investigation_level', s.investigation_level)",
    description="s.point_type || '，' || s.purpose", sensor=("环境γ辐射剂量率仪 (gamma dose-rate meter)",
                                                            "高压电离室、NaI(Tl) 闪烁体或热释光剂量计"),
    location="radiation monitoring point", stream_key="quantity", streams=(DOSE_RATE,))


def refresh(conn: Connection) -> None:
    """Make the points' Things, Locations, FeaturesOfInterest and Datastreams (idempotent), in the caller's
    transaction."""
    things.refresh(conn, KIND)
