"""Open311 GeoReport v2 over the case loop: services, requests (create, list with its filters, one), public
fields only."""

from datetime import datetime, timedelta, timezone

import pytest

from tests.case_support import fresh, key, places

PRIVATE = ("13700000000", "li@example.com", "李四")


@pytest.fixture(scope="module")
def place(engine, loaded):
    return places(engine, 1)[0]


def test_services_are_the_case_classes(http):
    services = {s["service_code"]: s for s in http.get("/open311/v2/services.json").json()}
    assert services["E0102"]["service_name"] == "暴露垃圾" and services["E0102"]["group"] == "市容环境"
    assert services["C0118"]["service_name"] == "路灯" and services["C0118"]["metadata"] is False


def test_a_form_encoded_request_is_created_listed_and_read_without_private_fields(http, place):
    spot = fresh(place)
    created = http.post("/open311/v2/requests.json", data={
        "service_code": "E0201", "lat": spot["lat"], "long": spot["lon"], "description": "小广告",
        "email": PRIVATE[1], "phone": PRIVATE[0], "first_name": PRIVATE[2]}, headers={"X-Forwarded-For": "198.51.100.9"})
    assert created.status_code == 201, created.text
    request_id = created.json()[0]["service_request_id"]
    one = http.get(f"/open311/v2/requests/{request_id}.json")
    assert one.status_code == 200
    (item,) = one.json()
    assert item["status"] == "open" and item["service_code"] == "E0201" and item["agency_responsible"]
    assert abs(item["lat"] - spot["lat"]) < 1e-9 and abs(item["long"] - spot["lon"]) < 1e-9
    now = datetime.now(timezone.utc)
    listed = http.get("/open311/v2/requests.json", params={
        "service_code": "E0201", "status": "open", "start_date": (now - timedelta(hours=1)).isoformat(),
        "end_date": (now + timedelta(hours=1)).isoformat()}).json()
    assert request_id in [r["service_request_id"] for r in listed]
    assert all(r["service_code"] == "E0201" and r["status"] == "open" for r in listed)
    assert all(r["status"] == "closed" for r in http.get("/open311/v2/requests.json", params={"status": "closed"}).json())
    by_id = http.get("/open311/v2/requests.json", params={"service_request_id": request_id}).json()
    assert [r["service_request_id"] for r in by_id] == [request_id]
    for text in (one.text, http.get("/open311/v2/requests.json").text):
        assert not any(secret in text for secret in PRIVATE)


def test_a_closed_case_is_closed_in_open311(http, engine, place):
    dispatcher = key(engine, "数字城管指挥中心", "dispatcher")
    spot = fresh(place)
    created = http.post("/open311/v2/requests.json", json={"service_code": "E0601", "lat": spot["lat"],
                                                           "long": spot["lon"]}, headers={"X-Forwarded-For": "198.51.100.11"})
    no = created.json()[0]["service_request_id"]
    http.post(f"/cases/{no}/steps", json={"action": "reject", "note": "不属于城市管理范围"}, headers=dispatcher)
    (item,) = http.get(f"/open311/v2/requests/{no}.json").json()
    assert item["status"] == "closed" and item["status_notes"] == "不属于城市管理范围"


def georeport_error(response, status: int) -> str:
    """GeoReport v2's error form: a JSON array of {code: the HTTP status, description}; the description."""
    assert response.status_code == status, response.text
    [error] = response.json()
    assert set(error) == {"code", "description"} and error["code"] == status
    return error["description"]


@pytest.mark.parametrize("body, status, says", [
    ({"service_code": "E0102"}, 400, "A request needs lat and long"),
    ({"service_code": "E0102", "lat": "north", "long": 120.4}, 400,
     "lat is a number (WGS84 degrees). (where: body.lat)"),
    ({"service_code": "X1", "lat": 31.5, "long": 120.4}, 422, "Unknown case class 'X1'"),
    ({"service_code": "E0102", "lat": 39.9, "long": 116.4}, 422, "(where: body.lon)"),
])
def test_bad_requests_are_refused_with_reasons_in_the_georeport_form(http, body, status, says):
    response = http.post("/open311/v2/requests.json", data=body, headers={"X-Forwarded-For": "198.51.100.10"})
    assert says in georeport_error(response, status)


def test_bad_filters_ids_and_bodies_are_georeport_errors_and_the_house_form_stays_elsewhere(http):
    assert georeport_error(http.get("/open311/v2/requests.json", params={"status": "pending"}), 400) == \
        "status is open, closed or open,closed. (where: query.status)"
    assert "(where: query.start_date)" in georeport_error(
        http.get("/open311/v2/requests.json", params={"start_date": "yesterday"}), 400)
    assert "(where: query.service_code)" in georeport_error(
        http.get("/open311/v2/requests.json", params={"service_code": "NOPE"}), 400)
    assert "(where: path.case_no)" in georeport_error(http.get("/open311/v2/requests/XW0.json"), 404)
    assert "(where: path.service_request_id)" in georeport_error(http.get("/open311/v2/requests/bad-id.json"), 400)
    assert "(where: body)" in georeport_error(http.post(
        "/open311/v2/requests.json", content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    assert georeport_error(http.post("/open311/v2/requests.json", content=b"x",
                                     headers={"Content-Type": "text/plain"}), 415)
    house = http.post("/cases", json={"class_code": "X1", "lon": 120.4, "lat": 31.5})
    assert house.status_code == 422 and house.json()["code"] == "unknown_class" and house.json()["where"]
