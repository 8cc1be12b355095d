"""Fuzzing the HTTP API from its own OpenAPI document (`/api`) with schemathesis: every operation, with
generated valid (positive) and invalid (negative) input, must answer without a 5xx, with a content type
it documents and, where it documents a response schema, a body that matches it.

Reads (GET, and the read-only POSTs under /query and /raster) go to the `server` fixture and its
district; writes go, with an admin key, to a private database holding the first features of each layer,
so the fuzzer's edits never reach what other test modules count. Bounded and reproducible:
FUZZ_EXAMPLES examples per operation and mode (default 6), derandomized, no shrinking, and operations
not begun within FUZZ_SECONDS (default 90) are left out and named. The figures of a run are printed
(pytest -s). Each operation is fuzzed to the end and all failures are reported together.
"""

import os
import time
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from sqlalchemy import insert, select

import tests.fuzz_hooks  # noqa: F401  (registers the hooks that narrow identifiers to existing ones)
from layers.catalog import catalog
from layers.tables import current
from tests.etl_support import drop_database, engine_for, private_database
from tests.server_support import logged_server
from twin.auth import create_key

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
BUDGET_S = float(os.environ.get("FUZZ_SECONDS", "90"))
COPIED = 20  # features copied per layer into the write target
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]
READ_ONLY_POSTS = ("/query/", "/raster/")
UNUSABLE_SCHEMA = {("GET", "/raster/{layer}/info"): "titiler's Info model: `items` given as a list (invalid in 3.1)"}
# An answer that never ends would hold each example for the whole timeout; tests/test_stream.py checks its inputs.
ENDLESS = {("GET", "/stream"): "Server-Sent Events"}


def is_write(method: str, path: str) -> bool:
    return method != "GET" and not path.startswith(READ_ONLY_POSTS)


@pytest.fixture(scope="module")
def write_target(engine, loaded, database_url, data_dir):
    """(base URL, admin key) of a server on a private database with the first features of each layer."""
    url = private_database(database_url, "twin_fuzz")
    private = engine_for(url)
    with engine.connect() as source, private.begin() as target:
        for spec in catalog().values():
            if spec.kind != "raster":
                table = current(spec)
                rows = source.execute(select(table).order_by(table.c.fid).limit(COPIED)).mappings().all()
                if rows:
                    target.execute(insert(table), [{k: v for k, v in row.items() if k != "fid"} for row in rows])
        key = create_key(target, "管理员", [], is_admin=True)
    private.dispose()
    try:
        with logged_server(url, data_dir, data_dir / "fuzz-writes.log") as base:
            yield base, key
    finally:
        drop_database(database_url, "twin_fuzz")


@pytest.fixture(scope="module")
def read_target(server, engine):
    with engine.begin() as conn:
        return server, create_key(conn, "管理员", [], is_admin=True)


def failure_codes(error: BaseException) -> list[tuple[str, str]]:
    failures = error.exceptions if isinstance(error, FailureGroup) else [error]
    return [(getattr(f, "code", type(f).__name__), getattr(f, "title", str(f))) for f in failures]


def fuzz(operation, mode: GenerationMode, target: tuple[str, str], session: requests.Session,
         found: dict, tally: Counter) -> None:
    base, key = target

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(base_url=base, session=session, headers={"Authorization": f"Bearer {key}"},
                             timeout=60)
        tally[operation.label] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Failure, FailureGroup) as error:
            for code, title in failure_codes(error):
                found.setdefault((operation.method.upper(), operation.path, code),
                                 f"{title}: {response.status_code} for {case.as_curl_command()}"[:600])

    try:
        run()
    except Unsatisfiable:  # negative mode for an operation without inputs: there is nothing to get wrong
        assert mode == GenerationMode.NEGATIVE


def test_no_server_error_and_responses_as_documented(read_target, write_target):
    schema = schemathesis.openapi.from_url(f"{read_target[0]}/api")
    found: dict[tuple[str, str, str], str] = {}
    tally: Counter = Counter()
    started = time.monotonic()
    left_out = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if (operation.method.upper(), operation.path) in UNUSABLE_SCHEMA | ENDLESS:
                continue
            if time.monotonic() - started > BUDGET_S:
                left_out.append(operation.label)
                continue
            target = write_target if is_write(operation.method.upper(), operation.path) else read_target
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz(operation, mode, target, session, found, tally)
    seconds = time.monotonic() - started
    print(f"\nfuzzed {len(tally)} operations with {sum(tally.values())} requests in {seconds:.0f} s "
          f"({EXAMPLES} examples per operation and mode)" + (f"; out of time for {left_out}" if left_out else ""))
    for key, reason in found.items():
        print(" ".join(key), "—", reason)  # ST101 a server error, ST105 an undocumented content type, …
    assert found == {}


TRACE = {"point": [120.45, 31.49], "direction": "upstream"}
WITHIN_NAMED = {"layer": "pollution_sources", "distance": 100, "of": {"layer": "rivers", "where": {"name": "a\x00"}}}


@pytest.mark.parametrize("method, path, body, where", [
    ("POST", "/query/trace", TRACE | {"distance": 5e-324}, "body.distance"),  # underflowed PostgreSQL's arithmetic
    ("POST", "/query/trace", TRACE | {"distance": 100, "snap": 1e-300}, "body.snap"),
    ("GET", "/collections/water_quality/series?station=a%00b", None, "query"),  # NUL: psycopg refuses it
    ("GET", "/collections/rivers/items?filter=name%3D'a%00'", None, "query"),
    ("GET", "/collections/rivers/items/1%00", None, "path"),
    ("GET", "/collections/rivers/tiles/WebMercatorQuad/12/1669/3418?filter=name%3D'a%00'", None, "query"),
    ("POST", "/query/within", WITHIN_NAMED, "body.of.where.name"),
])
def test_inputs_the_fuzzer_found_are_400s(http, method, path, body, where):
    response = http.request(method, path, json=body)
    assert response.status_code == 400, response.text
    found = response.json()["where"]
    assert (found if isinstance(found, str) else found[0]["where"]).startswith(where)


def test_tiny_distances_count_in_millimetres(http):
    response = http.post("/query/nearest", json={"point": [120.45, 31.49], "layers": ["monitoring_stations"],
                                                 "max_distance": 1e-300})
    assert response.status_code == 200, response.text
    assert response.json()["features"] == []


def test_the_openapi_document_says_what_errors_and_answers_look_like(http):
    document = http.get("/api").json()
    responses = document["paths"]["/collections/{collectionId}/items"]["get"]["responses"]
    assert "422" not in responses
    assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert document["components"]["schemas"]["Error"]["required"] == ["code", "description"]
    for path in ("/query/nearest", "/query/at"):
        assert list(document["paths"][path]["post"]["responses"]["200"]["content"]) == ["application/geo+json"]
    style = document["paths"]["/styles/{name}"]["get"]["responses"]["200"]["content"]
    assert list(style) == ["application/vnd.mapbox.style+json"]
    answer = http.post("/query/at", json={"point": [120.45, 31.49]})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/geo+json"
    bad = http.get("/collections/rivers/items", params={"limit": "many"})
    assert bad.status_code == 400 and {"code", "description", "where"} <= set(bad.json())
