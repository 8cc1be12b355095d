"""The service root: the entity sets and what this server implements."""

from fastapi import APIRouter, Request

from sensing.sta.entities import ENTITIES
from twin.urls import base_url

router = APIRouter(tags=["sensorthings"])
PREFIX = "/sta/v1.1"
SPEC = "http://www.opengis.net/spec/iot_sensing/1.1/req"
CONFORMANCE = [f"{SPEC}/datamodel", f"{SPEC}/resource-path/resource-path-to-entities", f"{SPEC}/request-data",
               f"{SPEC}/create-update-delete", f"{SPEC}/data-array/data-array"]


def sta_base(request: Request) -> str:
    return f"{base_url(request)}{PREFIX}"


@router.get(PREFIX)
@router.get(PREFIX + "/", include_in_schema=False)
async def service_root(request: Request):
    """The SensorThings service root."""
    base = sta_base(request)
    return {"value": [{"name": e.plural, "url": f"{base}/{e.plural}"} for e in ENTITIES.values()],
            "serverSettings": {"conformance": CONFORMANCE}}
