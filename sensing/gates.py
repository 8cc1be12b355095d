"""Gates (闸站) as SensorThings: every feature of the `gates` layer is a Thing (`properties.gate_code`, its code)
with its Location at the gate and four Datastreams (`properties.quantity`): the water levels up- and downstream
(metres above the 1985 national height datum, as the rivers' levels), the gate opening (percent of fully open) and
the PLC state (a whole-number code, the store keeping numbers only; `properties.states` says what each means).
Kept in step with the layer at start-up (sensing.things).
"""

from sqlalchemy.engine import Connection

from sensing import things
from sensing import water_quality as wq

COUNT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_CountObservation"
UCUM = "http://unitsofmeasure.org/ucum.html"
STATES = {"0": "全关 closed", "1": "开启中 opening", "2": "开 open (partly or fully)", "3": "关闭中 closing",
          "4": "停止 stopped midway", "9": "故障 fault"}
STREAMS = (
    things.Stream("upstream_level", "闸上水位 (upstream water level)", {"name": "metre", "symbol": "m",
                  "definition": UCUM}, wq.MEASUREMENT, "urn:twin:gate:upstream_level",
                  "闸上水位, metres above the 1985 national height datum"),
    things.Stream("downstream_level", "闸下水位 (downstream water level)", {"name": "metre", "symbol": "m",
                  "definition": UCUM}, wq.MEASUREMENT, "urn:twin:gate:downstream_level",
                  "闸下水位, metres above the 1985 national height datum"),
    things.Stream("opening", "闸门开度 (gate opening)", {"name": "percent", "symbol": "%", "definition": UCUM},
                  wq.MEASUREMENT, "urn:twin:gate:opening", "闸门开度, percent of fully open (0 closed, 100 open)"),
    things.Stream("plc_state", "PLC 状态 (PLC state)", {"name": "state code", "symbol": "{state}", "definition": UCUM},
                  COUNT, "urn:twin:gate:plc_state", "闸站 PLC 运行状态, a code (Datastream properties.states)",
                  {"states": STATES}),
)
KIND = things.Kind(
    layer="gates", key="gate_code", key_of="s.code",
    properties="jsonb_build_object('fid', s.fid, 'gate_type', s.gate_type, 'node_code', s.node_code, "
               "'river_code', s.river_code)",
    description="s.gate_type", sensor=("闸站 PLC (gate station PLC)", "闸站 PLC 与闸上、闸下水位计和闸位计"),
    location="gate", stream_key="quantity", streams=STREAMS)


def refresh(conn: Connection) -> None:
    """Make the gates' Things, Locations, FeaturesOfInterest and Datastreams (idempotent), in the caller's
    transaction."""
    things.refresh(conn, KIND)
