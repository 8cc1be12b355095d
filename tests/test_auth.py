"""Department keys over HTTP, on a private database and a server whose log we read: 401 for a missing,
malformed, unknown, wrong or revoked key, 403 for another department's layer, revocation effective on
the next request, refusals logged with the client's address and the key's prefix, and no key ever in
the log."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.etl_support import drop_database, engine_for, private_database
from tests.server_support import logged_server
from tests.tile_support import wait_for
from twin.auth import KeyRedaction, create_key, redact

LAYER = "monitoring_stations"
ITEMS = f"/collections/{LAYER}/items"
ETL = f"/etl/{LAYER}"
TWIN = Path(sys.executable).parent / "twin"


def station(code: str) -> dict:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [120.45, 31.49]},
            "properties": {"code": code, "name": f"站点{code}", "evaluation_type": "river"}}


def upload(code: str) -> dict:
    body = json.dumps({"type": "FeatureCollection", "features": [station(code)]}).encode()
    return {"files": {"file": ("stations.geojson", body, "application/geo+json")}}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def site(database_url, data_dir):
    """(URL, keys, client, server log) of a private database with its own server."""
    url = private_database(database_url, "twin_auth")
    engine = engine_for(url)
    with engine.begin() as conn:
        keys = {"ecology": create_key(conn, "生态环境局", [LAYER]),
                "urban": create_key(conn, "城管局", ["city_components"]),
                "admin": create_key(conn, "管理员", [], is_admin=True),
                "revoked": create_key(conn, "生态环境局", [LAYER])}
    engine.dispose()
    subprocess.run([TWIN, "keys", "revoke", keys["revoked"].split("_")[1]], check=True, capture_output=True,
                   env=os.environ | {"TWIN_DATABASE_URL": url})
    log = data_dir / "auth-server.log"
    try:
        with logged_server(url, data_dir, log, access_log=True) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            yield url, keys, client, log
    finally:
        drop_database(database_url, "twin_auth")


@pytest.fixture
def keys(site):
    return site[1]


@pytest.fixture
def api(site):
    return site[2]


def wrong_secret(key: str) -> str:
    return key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")


def writes(api, headers: dict, code: str) -> list[httpx.Response]:
    return [api.post(ITEMS, json=station(code), headers=headers), api.post(ETL, headers=headers, **upload(code))]


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == code
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_request_without_a_key_is_401(api):
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "bearer"},
                    {"Authorization": "Basic dXNlcjpwdw=="}):
        for response in writes(api, headers, "NOKEY"):
            assert_refused(response, 401, "missing_key")


def test_a_malformed_unknown_wrong_or_revoked_key_is_401(api, keys):
    ecology = keys["ecology"]
    prefix = ecology.split("_")[1]
    for key in ("garbage", "\t x", "twin_", "twin__secret", f"twin_{prefix}_", "twin_ab cd_secret",
                "twin_ab-cd_" + "y" * 40,
                f"twin_00000000_{ecology.split('_', 2)[2]}", wrong_secret(ecology), ecology + "x", keys["revoked"],
                "twin_" + "a" * 5000 + "_secret"):
        for response in writes(api, bearer(key), "BAD"):
            assert_refused(response, 401, "invalid_key")


def test_a_key_of_another_department_is_403(api, keys):
    for response in writes(api, bearer(keys["urban"]), "OTHER"):
        assert_refused(response, 403, "forbidden_layer")
        assert "城管局" in response.json()["description"]


def test_the_owning_department_and_an_admin_may_write(api, keys):
    created, started = writes(api, bearer(keys["ecology"]), "OWN")
    assert created.status_code == 201 and created.json()["properties"]["code"] == "OWN"
    assert started.status_code == 202 and started.json()["layer"] == LAYER
    created, started = writes(api, bearer(keys["admin"]), "ADMIN")
    assert created.status_code == 201 and started.status_code == 202


def test_revocation_by_the_cli_holds_from_the_next_request(api, site):
    url = site[0]
    engine = engine_for(url)
    with engine.begin() as conn:
        key = create_key(conn, "生态环境局", [LAYER])
    engine.dispose()
    assert api.post(ITEMS, json=station("BEFORE"), headers=bearer(key)).status_code == 201
    done = subprocess.run([TWIN, "keys", "revoke", key.split("_")[1]], capture_output=True, text=True,
                          env=os.environ | {"TWIN_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    for response in writes(api, bearer(key), "AFTER"):
        assert_refused(response, 401, "invalid_key")
    items = api.get(ITEMS, params={"filter": "code IN ('BEFORE', 'AFTER')"}).json()["features"]
    assert [f["properties"]["code"] for f in items] == ["BEFORE"]


def test_refusals_are_logged_with_the_client_address_and_key_prefix(api, keys, site):
    log = site[3]
    prefix = keys["ecology"].split("_")[1]
    assert api.post(ITEMS, json=station("X"), headers=bearer(wrong_secret(keys["ecology"]))).status_code == 401
    line = f"refused API key from 127.0.0.1: wrong secret (key prefix {prefix}) on POST {ITEMS}"
    assert wait_for(lambda: line in log.read_text(errors="replace"), seconds=5), log.read_text()[-2000:]
    revoked = keys["revoked"].split("_")[1]
    assert api.post(ITEMS, json=station("X"), headers=bearer(keys["revoked"])).status_code == 401
    assert wait_for(lambda: f"revoked key (key prefix {revoked})" in log.read_text(errors="replace"), seconds=5)
    assert api.post(ITEMS, json=station("X"), headers=bearer(keys["urban"])).status_code == 403
    urban = keys["urban"].split("_")[1]
    assert wait_for(lambda: f"key {urban} of 城管局 refused a write to layer {LAYER}" in log.read_text(), seconds=5)


def test_the_server_log_never_holds_a_key(api, keys, site):
    log = site[3]
    # a key where it does not belong: in the query string (the access log prints it) and in a body
    api.get("/collections", params={"key": keys["admin"]})
    api.post(ITEMS, content=f'{{"token": "{keys["ecology"]}"'.encode(), headers=bearer(keys["ecology"]))
    api.post(ITEMS, json=station("Y"), headers=bearer(wrong_secret(keys["admin"])))
    assert wait_for(lambda: "GET /collections?key=twin_" in log.read_text(errors="replace"), seconds=5)
    text = log.read_text(errors="replace")
    for key in [*keys.values(), wrong_secret(keys["admin"]), wrong_secret(keys["ecology"])]:
        secret = key.split("_", 2)[2]
        assert key not in text and secret not in text
    assert f"GET /collections?key=twin_{keys['admin'].split('_')[1]}_[redacted]" in text


def test_the_redaction_filter_scrubs_messages_arguments_and_tracebacks():
    key = "twin_0a1b2c3d_Zx9-_Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe9Dc8Ba7Zy6Xw5"
    assert redact(f"Authorization: Bearer {key}") == "Authorization: Bearer [redacted]"
    assert redact("{'authorization': 'Basic dXNlcjpwdw=='}") == "{'authorization': 'Basic [redacted]'}"
    assert redact("authorization=abcdef123") == "authorization=[redacted]"
    assert redact(f"url /x?key={key}&y=1") == "url /x?key=twin_0a1b2c3d_[redacted]&y=1"
    assert redact("the twin_change channel and twin.api_key") == "the twin_change channel and twin.api_key"
    try:
        raise ValueError(f"bad key {key}")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "key %s", (key,), sys.exc_info())
    KeyRedaction().filter(record)
    formatted = logging.Formatter().format(record)
    assert key not in formatted and "twin_0a1b2c3d_[redacted]" in formatted
