"""Keys and a SensorThings client for the /sta/v1.1 tests."""

import frost_sta_client as fsc
import httpx
from frost_sta_client.service.auth_handler import AuthHandler

from twin.auth import create_key

ECOLOGY, URBAN = "生态环境局", "城管局"


class BearerKey(AuthHandler):
    """frost-sta-client speaks Basic auth; our keys are bearer tokens."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key

    def add_auth_header(self):
        def sign(request):
            request.headers["Authorization"] = f"Bearer {self.key}"
            return request
        return sign


def keys(engine) -> dict[str, str]:
    with engine.begin() as conn:
        return {"ecology": create_key(conn, ECOLOGY, ["water_quality", "monitoring_stations"]),
                "urban": create_key(conn, URBAN, ["city_components"])}


def service(server: str, key: str | None = None) -> fsc.SensorThingsService:
    return fsc.SensorThingsService(f"{server}/sta/v1.1", auth_handler=BearerKey(key) if key else None)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def get(http: httpx.Client, path: str, **params) -> dict:
    response = http.get(f"/sta/v1.1/{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()
