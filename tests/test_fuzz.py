"""Fuzzing the HTTP API from its own OpenAPI document (`/api`) with schemathesis: every operation, with
generated valid and invalid input, must answer without a 5xx, with the content type it documents and,
where it documents a response schema, a body that matches it.

Reads (GET, and the read-only POSTs of /query and /raster) go to the `server` fixture and its district;
writes go, with an admin key, to a private database holding a few features of each layer, so the
fuzzer's edits never reach what other test modules count. Bounded and reproducible: FUZZ_EXAMPLES
examples per operation (default 8), derandomized. The figures of a run are printed with -s.
"""

import os
import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from sqlalchemy import insert, select

import tests.fuzz_hooks  # noqa: F401  (registers the hooks)
from layers.catalog import catalog
from layers.tables import current
from tests.etl_support import drop_database, engine_for, private_database
from tests.server_support import logged_server
from twin.auth import create_key

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
COPIED = 20  # features copied per layer into the write target
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]
READ_ONLY_POSTS = ("/query/", "/raster/")
tally: Counter = Counter()


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
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server}/api")


@pytest.fixture(scope="module")
def admin_key(engine):
    with engine.begin() as conn:
        return create_key(conn, "管理员", [], is_admin=True)


@pytest.fixture(scope="module", autouse=True)
def report():
    started = time.monotonic()
    yield
    if tally:
        print(f"\nfuzzing: {sum(tally.values())} requests to {len(tally)} operations in "
              f"{time.monotonic() - started:.0f} s, {EXAMPLES} examples per operation")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_responses_as_documented(case, server, admin_key, write_target):
    base, key = (write_target if is_write(case.method, case.path) else (server, admin_key))
    response = case.call(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    tally[f"{case.method} {case.path}"] += 1
    case.validate_response(response, checks=CHECKS)
