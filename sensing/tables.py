"""SQLAlchemy Core tables of the observation store (migration 0013)."""

from geoalchemy2 import Geometry
from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, MetaData, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from layers.catalog import SRID

metadata = MetaData(schema="sensing")


def _id() -> Column:
    return Column("id", BigInteger, primary_key=True)


def _named() -> list[Column]:
    return [Column("name", Text), Column("description", Text), Column("properties", JSONB)]


def _time(name: str) -> Column:
    return Column(name, DateTime(timezone=True))


def _geometry(name: str) -> Column:
    return Column(name, Geometry(srid=SRID, spatial_index=False))


thing = Table("thing", metadata, _id(), *_named(), Column("department", Text), Column("station_code", Text))
location = Table("location", metadata, _id(), *_named(), Column("encoding_type", Text), _geometry("geom"),
                 Column("department", Text), Column("station_code", Text))
thing_location = Table("thing_location", metadata, Column("thing_id", BigInteger, primary_key=True),
                       Column("location_id", BigInteger, primary_key=True))
historical_location = Table("historical_location", metadata, _id(), Column("thing_id", BigInteger), _time("time"))
historical_location_location = Table("historical_location_location", metadata,
                                     Column("historical_location_id", BigInteger, primary_key=True),
                                     Column("location_id", BigInteger, primary_key=True))
sensor = Table("sensor", metadata, _id(), *_named(), Column("encoding_type", Text), Column("metadata", Text),
               Column("department", Text))
observed_property = Table("observed_property", metadata, _id(), *_named(), Column("definition", Text),
                          Column("department", Text))
feature_of_interest = Table("feature_of_interest", metadata, _id(), *_named(), Column("encoding_type", Text),
                            _geometry("feature"), Column("department", Text), Column("location_id", BigInteger))
datastream = Table("datastream", metadata, _id(), *_named(), Column("unit_of_measurement", JSONB),
                   Column("observation_type", Text), _geometry("observed_area"), Column("thing_id", BigInteger),
                   Column("sensor_id", BigInteger), Column("observed_property_id", BigInteger),
                   Column("department", Text), Column("wq_field", Text))
water_quality_parameter = Table("water_quality_parameter", metadata, Column("field", Text, primary_key=True),
                                Column("position", Integer), Column("title", Text),
                                Column("unit_of_measurement", JSONB), Column("hj212_code", Text),
                                Column("observed_property_id", BigInteger), Column("sensor_id", BigInteger))
observation = Table("observation", metadata, _id(), Column("datastream_id", BigInteger), _time("phenomenon_time"),
                    _time("phenomenon_time_end"), _time("result_time"), Column("result", Float),
                    Column("result_quality", Text), Column("feature_of_interest_id", BigInteger))


def _aggregate(name: str) -> Table:
    return Table(name, metadata, Column("datastream_id", BigInteger, primary_key=True),
                 Column("period_start", DateTime(timezone=True), primary_key=True), Column("count", BigInteger),
                 Column("min", Float), Column("max", Float), Column("sum", Float))


observation_hourly = _aggregate("observation_hourly")
observation_daily = _aggregate("observation_daily")
latest_observation = Table("latest_observation", metadata, Column("datastream_id", BigInteger, primary_key=True),
                           Column("observation_id", BigInteger), _time("phenomenon_time"), Column("result", Float),
                           Column("result_quality", Text))
