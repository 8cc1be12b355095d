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


@pytest.mark.parametrize("body, code", [
    ({"service_code": "E0102"}, "missing_location"),
    ({"service_code": "E0102", "lat": "north", "long": 120.4}, "invalid_number"),
    ({"service_code": "X1", "lat": 31.5, "long": 120.4}, "unknown_class"),
    ({"service_code": "E0102", "lat": 39.9, "long": 116.4}, "outside_district"),
])
def test_bad_requests_are_refused_with_reasons(http, body, code):
    response = http.post("/open311/v2/requests.json", data=body, headers={"X-Forwarded-For": "198.51.100.10"})
    assert 400 <= response.status_code < 500 and response.json()["code"] == code


def test_bad_filters_are_400(http):
    assert http.get("/open311/v2/requests.json", params={"status": "pending"}).json()["code"] == "invalid_status"
    assert http.get("/open311/v2/requests.json", params={"start_date": "yesterday"}).status_code == 400
    assert http.get("/open311/v2/requests.json", params={"service_code": "NOPE"}).status_code == 400
    assert http.get("/open311/v2/requests/XW0.json").status_code == 404
