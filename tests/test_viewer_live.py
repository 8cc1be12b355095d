"""The live viewer in a real browser: a change on the event stream makes MapLibre ask again for the vector tiles
under the change, and for no others; a change off screen asks for none until the view comes back to it, when
the tiles MapLibre kept from before the change are asked again. The stream carries the layers shown only."""

import re

import morecantile
import pytest
from sqlalchemy import text

from tests.test_viewer import Page, chromium

VIEW = "map=14/31.535/120.40&layers=city_components"
TILE = re.compile(r"/WebMercatorQuad/(\d+)/(\d+)/(\d+)")
GRID = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-live")) as context:
        yield context


@pytest.fixture
def viewer(browser, server):
    page = Page(browser, server).open(VIEW)
    yield page
    page.page.close()


def tiles_asked(urls: list[str]) -> set[tuple[int, int, int]]:
    """(z, x, y) of the vector tiles among the URLs."""
    found = set()
    for url in urls:
        match = TILE.search(url)
        if match:
            z, y, x = map(int, match.groups())
            found.add((z, x, y))
    return found


def write(engine, sql: str, **values) -> int:
    """Run one statement; the change id it ended at."""
    with engine.begin() as conn:
        conn.execute(text(sql), values)
        return conn.execute(text("SELECT max(change_id) FROM twin.change")).scalar_one()


def seen(viewer: Page, change: int, refreshed: int) -> None:
    """Until the page has had the change event and refreshed more than `refreshed` tiles, then drawn them."""
    viewer.page.wait_for_function(f"Number(document.body.dataset.lastChange) >= {change} && "
                                  f"Number(document.body.dataset.refreshedTiles ?? 0) > {refreshed}", timeout=15_000)
    viewer.idle()


def test_a_change_refreshes_only_the_tiles_under_it_and_its_removal_them_again(viewer, engine):
    on_screen = tiles_asked(viewer.urls)
    assert len(on_screen) > 2, "the view should be drawn from several tiles"
    lng, lat = viewer.page.evaluate("(() => { const c = window.twinMap.getContainer(); "
                                    "return window.twinMap.unproject([c.clientWidth * 0.3, c.clientHeight * 0.3])"
                                    ".toArray(); })()")
    under = {(z, t.x, t.y) for z in range(0, 23) for t in [GRID.tile(lng, lat, z)]}
    point = "ST_SetSRID(ST_MakePoint(:lng, :lat), 4490)"
    mark = len(viewer.urls)
    change = write(engine, "INSERT INTO layers.city_components (code, status, geom) "
                           f"VALUES ('LIVE-1', '完好', {point})", lng=lng, lat=lat)
    seen(viewer, change, 0)
    asked = tiles_asked(viewer.urls[mark:])
    assert asked and asked <= under, asked - under  # the tile under the point, at each zoom on screen
    assert on_screen - asked  # the rest of the view was not asked again
    refreshed = int(viewer.page.evaluate("document.body.dataset.refreshedTiles"))
    # a delete has no feature after it: its box is where the feature was
    mark = len(viewer.urls)
    change = write(engine, "DELETE FROM layers.city_components WHERE code = 'LIVE-1'")
    seen(viewer, change, refreshed)
    assert tiles_asked(viewer.urls[mark:]) == asked


def test_a_change_off_screen_asks_for_no_tile(viewer, engine):
    mark = len(viewer.urls)
    try:
        change = write(engine, "INSERT INTO layers.city_components (code, status, geom) "
                               "VALUES ('LIVE-2', '完好', ST_SetSRID(ST_MakePoint(120.58, 31.61), 4490))")
        viewer.page.wait_for_function(f"Number(document.body.dataset.lastChange) >= {change}", timeout=15_000)
        viewer.idle()
        assert not tiles_asked(viewer.urls[mark:])
        assert viewer.page.evaluate("document.body.dataset.refreshedTiles") is None
    finally:
        write(engine, "DELETE FROM layers.city_components WHERE code = 'LIVE-2'")


def test_tiles_kept_off_screen_are_refreshed_when_the_view_comes_back_to_a_change(viewer, engine):
    lng, lat = viewer.page.evaluate("window.twinMap.getCenter().toArray()")
    under = {(z, t.x, t.y) for z in range(0, 23) for t in [GRID.tile(lng, lat, z)]}
    assert tiles_asked(viewer.urls) & under
    viewer.page.evaluate("window.twinMap.jumpTo({center: [120.55, 31.60]})")  # the view's tiles go off screen
    viewer.idle()
    try:
        change = write(engine, "INSERT INTO layers.city_components (code, status, geom) VALUES "
                               "('LIVE-3', '完好', ST_SetSRID(ST_MakePoint(:lng, :lat), 4490))", lng=lng, lat=lat)
        viewer.page.wait_for_function(f"Number(document.body.dataset.lastChange) >= {change}", timeout=15_000)
        mark = len(viewer.urls)
        viewer.page.evaluate(f"window.twinMap.jumpTo({{center: [{lng}, {lat}]}})")  # back: MapLibre's kept tiles
        seen(viewer, change, 0)
        asked = tiles_asked(viewer.urls[mark:])
        assert asked and asked <= under, asked - under
    finally:
        write(engine, "DELETE FROM layers.city_components WHERE code = 'LIVE-3'")


def streamed_layers(viewer: Page) -> set[str]:
    return set(viewer.page.evaluate("document.body.dataset.streamLayers").split(","))


def test_the_stream_carries_the_layers_shown_and_a_layer_shown_again_gets_what_it_missed(viewer, engine):
    layers = streamed_layers(viewer)
    assert "city_components" in layers and layers - {"city_components"} <= {"alerts", "water_quality"}
    opened = [url for url in viewer.urls if "/stream?" in url]
    assert "layers=" in opened[-1]
    insert = ("INSERT INTO layers.city_components (code, status, geom) "
              "VALUES (:code, '完好', ST_SetSRID(ST_MakePoint(120.40, 31.535), 4490))")
    toggle = viewer.page.locator('input[data-layer="city_components"]')
    try:
        shown = write(engine, insert, code="LIVE-4")
        viewer.page.wait_for_function(f"Number(document.body.dataset.lastChange) >= {shown}", timeout=15_000)
        toggle.uncheck()
        viewer.page.wait_for_function("!document.body.dataset.streamLayers.split(',').includes('city_components')")
        hidden = write(engine, insert, code="LIVE-5")
        viewer.page.wait_for_timeout(1500)  # time for an event that would come
        assert int(viewer.page.evaluate("document.body.dataset.lastChange")) == shown
        toggle.check()  # the stream opens again after the last event id: the hidden layer's change comes now
        viewer.page.wait_for_function(f"Number(document.body.dataset.lastChange) >= {hidden}", timeout=15_000)
        assert "city_components" in streamed_layers(viewer)
    finally:
        write(engine, "DELETE FROM layers.city_components WHERE code IN ('LIVE-4', 'LIVE-5')")
