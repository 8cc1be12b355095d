"""numberMatched of a whole layer: exact at any size, kept by the database (migration 0012) through every
write path, and the analysts' client paging through a layer of many pages against the real server."""

import pytest
from sqlalchemy import text

from layers.catalog import catalog
from twin.client import Twin

FEATURE_LAYERS = [s.id for s in catalog().values() if s.kind != "raster"]


def counts(engine) -> dict[str, tuple[int, int]]:
    """Each layer's kept count beside its real one."""
    with engine.connect() as conn:
        kept = dict(conn.execute(text("SELECT layer, features FROM twin.feature_count")).all())
        return {layer: (kept.get(layer), conn.execute(text(f"SELECT count(*) FROM layers.{layer}")).scalar_one())
                for layer in FEATURE_LAYERS}


def test_every_layer_has_an_exact_kept_count(engine, loaded):
    assert all(kept == real for kept, real in counts(engine).values()), counts(engine)


@pytest.mark.parametrize("layer", [layer for layer in FEATURE_LAYERS if not catalog()[layer].private])
def test_an_unfiltered_page_reports_the_whole_layer(http, engine, layer):
    page = http.get(f"/collections/{layer}/items", params={"limit": 1}).json()
    assert page["numberMatched"] == counts(engine)[layer][1]


def test_the_count_follows_sql_inserts_deletes_and_a_rolled_back_load(http, engine, loaded):
    def matched() -> int:
        return http.get("/collections/pollution_sources/items", params={"limit": 1}).json()["numberMatched"]

    before = matched()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.pollution_sources (credit_code, name, geom) "
                          "SELECT 'COUNT' || n, 'count test ' || n, ST_SetSRID(ST_Point(120.4, 31.5), 4490) "
                          "FROM generate_series(1, 25) n"))
    assert matched() == before + 25
    with engine.begin() as conn:
        conn.execute(text("UPDATE layers.pollution_sources SET name = name || '!' WHERE credit_code LIKE 'COUNT%'"))
        conn.execute(text("DELETE FROM layers.pollution_sources WHERE credit_code IN ('COUNT1', 'COUNT2')"))
    assert matched() == before + 23
    with engine.connect() as conn:
        with conn.begin() as transaction:
            conn.execute(text("DELETE FROM layers.pollution_sources WHERE credit_code LIKE 'COUNT%'"))
            transaction.rollback()
    assert matched() == before + 23
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM layers.pollution_sources WHERE credit_code LIKE 'COUNT%'"))
    assert matched() == before
    assert all(kept == real for kept, real in counts(engine).values())


def test_a_filtered_page_is_still_counted_by_its_matches(http, engine):
    with engine.connect() as conn:
        normal = conn.execute(text("SELECT count(*) FROM layers.city_components WHERE status = '完好'")).scalar_one()
    page = http.get("/collections/city_components/items",
                    params={"limit": 1, "filter": "status = '完好'"}).json()
    assert page["numberMatched"] == normal < counts(engine)["city_components"][1]


def test_the_client_follows_next_links_through_many_pages(server, engine):
    """httpx drops a URL's query when given params={}: the client fetches next links as they are, so a layer
    of many pages is read once through, not its second page for ever."""
    with engine.connect() as conn:
        everything = set(conn.execute(text("SELECT fid FROM layers.city_components")).scalars())
    with Twin(server, page_size=700) as twin:
        components = twin.features("city_components")
        assert len(everything) >= 3 * 700
        assert len(components) == len(everything) and set(components["fid"]) == everything
        changes = twin.changes(layer="city_components")
        assert len(changes) > 3 * 700 and changes["id"].is_unique and changes["id"].is_monotonic_increasing
        recent = twin.layer_changes("city_components")
        assert set(recent["id"]) == set(changes["id"])
