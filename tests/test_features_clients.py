"""Real clients of the features API: GDAL's OAPIF driver (through pyogrio) and OWSLib."""

from urllib.parse import unquote_plus

import numpy as np
import pyogrio
import pytest
import shapely
from owslib.ogcapi.features import Features
from sqlalchemy import text

from layers.catalog import vector_layers
from tests.server_support import logged_server

BOX = (120.35, 31.45, 120.45, 31.55)


def stored(engine, layer: str, where: str = "TRUE") -> dict[int, shapely.Geometry]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT fid, ST_AsBinary(geom) FROM layers.{layer} WHERE {where}")).all()
    return {fid: wkb and shapely.from_wkb(bytes(wkb)) for fid, wkb in rows}  # an alert of a Thing without a place has none


@pytest.mark.parametrize("layer", [spec.id for spec in vector_layers() if not spec.private])
def test_gdal_reads_every_vector_collection(server, engine, layer):
    expected = stored(engine, layer)
    page = max(len(expected) // 3, 1)  # at least three pages where there is anything to page through
    frame = pyogrio.read_dataframe(f"OAPIF:{server}/collections/{layer}", fid_as_index=True, PAGE_SIZE=str(page))
    assert len(frame) == len(expected)
    assert frame.crs is not None and frame.crs.to_epsg() == 4490  # the storageCrs, read in lon/lat order
    assert sorted(frame.index) == sorted(expected)
    for fid, geometry in frame.geometry.items():
        if expected[fid] is None:
            assert geometry is None, fid
        else:
            assert shapely.equals_exact(shapely.normalize(geometry), shapely.normalize(expected[fid]), tolerance=1e-7)


def test_gdal_attribute_and_spatial_filters(server, engine):
    url = f"OAPIF:{server}/collections/city_components"
    broken = pyogrio.read_dataframe(url, where="status = '破损'", PAGE_SIZE="200")
    assert len(broken) == len(stored(engine, "city_components", "status = '破损'")) > 0
    installed = pyogrio.read_dataframe(url, where="installed_on >= '2015-01-01' AND installed_on <= '2016-01-01'")
    assert len(installed) == len(stored(engine, "city_components",
                                        "installed_on BETWEEN '2015-01-01' AND '2016-01-01'")) > 0
    boxed = pyogrio.read_dataframe(url, bbox=BOX, PAGE_SIZE="500")
    inside = stored(engine, "city_components", "ST_Intersects(geom, ST_MakeEnvelope({}, {}, {}, {}, 4490))"
                    .format(*BOX))
    assert len(boxed) == len(inside) > 0
    assert np.all(shapely.intersects(boxed.geometry.values, shapely.box(*BOX)))


def test_owslib_lists_collections_and_fetches_with_bbox_and_cql2(server, engine):
    api = Features(server)
    assert {spec.id for spec in vector_layers() if not spec.private} <= set(api.feature_collections())
    inside = stored(engine, "city_components", "ST_Intersects(geom, ST_MakeEnvelope({}, {}, {}, {}, 4490))"
                    .format(*BOX))
    boxed = api.collection_items("city_components", bbox=list(BOX), limit=10_000)
    assert boxed["numberMatched"] == len(boxed["features"]) == len(inside)
    assert {f["id"] for f in boxed["features"]} == set(inside)
    wanted = stored(engine, "city_components", "status = '破损' AND installed_on >= '2015-01-01'")
    filtered = api.collection_items("city_components", limit=10_000,
                                    filter="status = '破损' AND installed_on >= DATE('2015-01-01')")
    assert {f["id"] for f in filtered["features"]} == set(wanted) and wanted
    assert "status" in api.collection_queryables("city_components")["properties"]


def test_gdal_sends_an_attribute_filter_to_the_server(database_url, data_dir, loaded, engine):
    """GDAL finds `filter-lang` under /collections/{collectionId}/items in the OpenAPI document and the
    properties it may name in the queryables, so it asks the server for the matches only."""
    log = data_dir / "gdal-filter-server.log"
    with logged_server(database_url, data_dir, log, access_log=True) as base:
        frame = pyogrio.read_dataframe(f"OAPIF:{base}/collections/city_components", fid_as_index=True,
                                       where="status = '破损' AND installed_on >= '2015-01-01'")
    expected = stored(engine, "city_components", "status = '破损' AND installed_on >= '2015-01-01'")
    assert sorted(frame.index) == sorted(expected) and expected
    fetched = [unquote_plus(line) for line in log.read_text().splitlines()
               if "/collections/city_components/items?" in line]
    filtered = [line for line in fetched if "filter=" in line]
    # the status test travels as CQL; the date test GDAL keeps, since it would write the date as a bare string
    assert filtered and all("filter=status = '破损'&filter-lang=cql-text" in line for line in filtered)
    assert not any("installed_on" in line for line in fetched)
