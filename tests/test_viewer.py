"""The one-map viewer in a real browser (Debian's headless Chromium, driven by Playwright over
CDP): it renders tiles offline, toggles layers, shows Chinese attributes, searches, measures,
keeps the view in the URL and colours stations by their latest water class."""

import datetime
import json
import re
import statistics
from contextlib import contextmanager
from urllib.parse import urlsplit

import pyproj
import pytest
import shapely
from PIL import Image
from sqlalchemy import text

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--lang=zh-CN"]
VIEW = "map=13/31.535/120.40"

# Resolves once the map has drawn everything it asked for.
IDLE = """() => new Promise(done => {
  const map = window.twinMap;
  map.once('idle', () => done(true));
  map.triggerRepaint();
})"""
RENDERED = """() => {
  const counts = {};
  for (const f of window.twinMap.queryRenderedFeatures()) {
    const layer = f.layer.metadata && f.layer.metadata['twin:layer'];
    if (layer) counts[layer] = (counts[layer] || 0) + 1;
  }
  return counts;
}"""


@contextmanager
def chromium(directory, device: str | None = None, **options):
    """Debian's chromium, headless, in Chinese, with a profile in `directory`: as a desktop (1366×768), or as
    the playwright `device` (its viewport and screen given in `options`), until the block ends."""
    with playwright.sync_playwright() as p:
        if device is None:
            options = {"viewport": {"width": 1366, "height": 768}} | options
        else:
            options = {k: v for k, v in p.devices[device].items() if k != "default_browser_type"} | options
        context = p.chromium.launch_persistent_context(str(directory), executable_path=CHROMIUM, headless=True,
                                                       args=FLAGS, locale="zh-CN", **options)
        yield context
        context.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium")) as context:
        yield context


class Page:
    """A viewer page that records console errors and every host it talked to."""

    def __init__(self, context, server):
        self.server, self.errors, self.hosts, self.urls = server, [], set(), []
        self.page = context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._request)

    def _request(self, request):
        self.urls.append(request.url)
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss"):
            self.hosts.add(parts.hostname)

    def open(self, hash_part=VIEW):
        self.page.goto(f"{self.server}/map#{hash_part}")
        self.page.wait_for_function("document.body.classList.contains('ready')", timeout=30_000)
        self.idle()
        return self

    def idle(self):
        self.page.evaluate(IDLE)

    def rendered(self) -> dict:
        return self.page.evaluate(RENDERED)

    def click_lnglat(self, lng, lat):
        point = self.page.evaluate("([lng, lat]) => window.twinMap.project([lng, lat])", [lng, lat])
        box = self.page.locator("#map").bounding_box()
        self.page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])


@pytest.fixture
def viewer(browser, server):
    page = Page(browser, server)
    yield page
    page.page.close()


def test_page_renders_the_district_offline(viewer, tmp_path):
    viewer.open()
    counts = viewer.rendered()
    for layer in ("districts", "streets", "roads", "rivers", "city_components", "pollution_sources",
                  "monitoring_stations"):
        assert counts.get(layer, 0) > 0, counts
    assert any("/tiles/onemap/WebMercatorQuad/" in url for url in viewer.urls)
    assert viewer.hosts == {"127.0.0.1"}, viewer.hosts
    assert not viewer.errors, viewer.errors
    # The layer tree lists the four groups with their Chinese titles and a generated legend.
    groups = viewer.page.locator("#layer-tree summary").all_inner_texts()
    assert [g.split("\n")[0] for g in groups] == ["基础地理", "城市部件", "生态环境", "智慧排水", "水环境"]
    legend = viewer.page.locator(".legend[data-layer=monitoring_stations]").inner_text()
    assert all(name in legend for name in ("Ⅰ类", "Ⅲ类", "劣Ⅴ类", "暂无数据"))
    assert "公用设施" in viewer.page.locator(".legend[data-layer=city_components]").inner_text()

    shot = tmp_path / "viewer.png"
    viewer.page.screenshot(path=str(shot))
    pixels = list(Image.open(shot).convert("L").getdata())
    assert statistics.pstdev(pixels) > 20, "the screenshot is blank"
    map_box = viewer.page.locator("#map").bounding_box()
    assert map_box["width"] > 700 and map_box["height"] > 600, "on a laptop screen the map takes most of it"


def test_toggling_a_layer_hides_it_and_keeps_it_in_the_link(viewer):
    viewer.open()
    assert viewer.rendered().get("roads", 0) > 0
    viewer.page.locator("input[type=checkbox][data-layer=roads]").uncheck()
    viewer.idle()
    assert viewer.rendered().get("roads", 0) == 0
    assert viewer.rendered().get("rivers", 0) > 0
    hash_layers = viewer.page.evaluate("new URLSearchParams(location.hash.slice(1)).get('layers').split(',')")
    assert "roads" not in hash_layers and "rivers" in hash_layers
    viewer.page.locator("input[type=checkbox][data-layer=roads]").check()
    viewer.idle()
    assert viewer.rendered().get("roads", 0) > 0
    # Opacity scales the style's own: the rivers line is opaque in the style, half now.
    viewer.page.eval_on_selector(".layer[data-layer=rivers] .opacity",
                                 "s => { s.value = 50; s.dispatchEvent(new Event('input')); }")
    assert viewer.page.evaluate("window.twinMap.getPaintProperty('rivers-line', 'line-opacity')") == 0.5


def _latest_classes(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT DISTINCT ON (station_code) station_code, water_class FROM layers.water_quality "
                                 "WHERE water_class IS NOT NULL ORDER BY station_code, observed_at DESC"))
        return dict(rows.all())


def _station(engine, code=None):
    with engine.connect() as conn:
        row = conn.execute(text("SELECT code, name, ST_X(geom), ST_Y(geom) FROM layers.monitoring_stations "
                                "WHERE code LIKE 'XW-%' ORDER BY code LIMIT 1")).one()
    return row


def test_stations_are_coloured_by_their_latest_class(viewer, engine):
    viewer.open()
    latest = _latest_classes(engine)
    viewer.page.wait_for_function("document.body.dataset.waterClasses", timeout=20_000)
    assert int(viewer.page.evaluate("document.body.dataset.waterClasses")) == len(latest)
    states = viewer.page.evaluate("""codes => codes.map(code => window.twinMap.getFeatureState(
        {source: 'onemap', sourceLayer: 'monitoring_stations', id: code}).latest_class ?? null)""", list(latest))
    assert dict(zip(latest, states)) == latest


def test_clicking_a_station_shows_chinese_attributes_and_its_readings(viewer, engine):
    code, name, lng, lat = _station(engine)
    viewer.open(f"map=15/{lat}/{lng}")
    viewer.click_lnglat(lng, lat)
    popup = viewer.page.locator(".maplibregl-popup")
    popup.wait_for(timeout=10_000)
    body = popup.inner_text()
    assert "水质监测站点" in body and name in body
    assert all(label in body for label in ("站点编码", "站点名称", "所属河流或湖库", "水质目标类别")), body
    assert "water_body" not in body and "target_class" not in body
    panel = viewer.page.locator("#panel")
    viewer.page.locator("#panel .line-chart circle").first.wait_for(timeout=10_000)
    latest = _latest_classes(engine)[code]
    roman = {1: "Ⅰ类", 2: "Ⅱ类", 3: "Ⅲ类", 4: "Ⅳ类", 5: "Ⅴ类", 6: "劣Ⅴ类"}[latest]
    assert f"最新水质：{roman}" in panel.inner_text().replace("\n", "")
    assert viewer.page.locator("#panel .line-chart circle").count() > 24
    assert not viewer.errors, viewer.errors


def test_search_finds_a_feature_by_name(viewer, engine):
    code, name, lng, lat = _station(engine)
    viewer.open()
    viewer.page.fill("#search-input", name)
    viewer.page.press("#search-input", "Enter")
    hit = viewer.page.locator(".search-hit[data-layer=monitoring_stations]", has_text=name)
    hit.first.wait_for(timeout=10_000)
    assert "null" not in viewer.page.locator("#search-results").inner_text()
    hit.first.click()
    popup = viewer.page.locator(".maplibregl-popup")
    popup.wait_for(timeout=10_000)
    assert code in popup.inner_text()
    centre = viewer.page.evaluate("window.twinMap.getCenter().toArray()")
    assert abs(centre[0] - lng) < 1e-3 and abs(centre[1] - lat) < 1e-3
    assert not viewer.errors, viewer.errors


def test_the_link_restores_the_view(viewer, browser, server):
    viewer.open("map=14.25/31.5102/120.3801&layers=rivers,monitoring_stations")
    view = viewer.page.evaluate("({c: window.twinMap.getCenter().toArray(), z: window.twinMap.getZoom()})")
    assert view["z"] == pytest.approx(14.25) and view["c"] == pytest.approx([120.3801, 31.5102], abs=1e-4)
    checked = viewer.page.eval_on_selector_all("#layer-tree input[type=checkbox]:checked",
                                               "boxes => boxes.map(b => b.dataset.layer)")
    assert sorted(checked) == ["monitoring_stations", "rivers"]
    assert set(viewer.rendered()) <= {"rivers", "monitoring_stations"}
    viewer.page.evaluate("window.twinMap.jumpTo({center: [120.41, 31.55], zoom: 12.5})")
    viewer.page.wait_for_function("location.hash.includes('map=12.5/')")
    link = viewer.page.url
    other = Page(browser, server)
    try:
        other.page.goto(link)
        other.page.wait_for_function("document.body.classList.contains('ready')")
        again = other.page.evaluate("({c: window.twinMap.getCenter().toArray(), z: window.twinMap.getZoom()})")
        assert again["z"] == pytest.approx(12.5) and again["c"] == pytest.approx([120.41, 31.55], abs=1e-3)
        checked = other.page.eval_on_selector_all("#layer-tree input[type=checkbox]:checked",
                                                  "boxes => boxes.map(b => b.dataset.layer)")
        assert sorted(checked) == ["monitoring_stations", "rivers"]
    finally:
        other.page.close()


def test_drawn_polygon_counts_what_is_inside(viewer, engine):
    viewer.open("map=14/31.535/120.40&layers=city_components,pollution_sources")
    viewer.page.click("#measure-button")
    box = viewer.page.locator("#map").bounding_box()
    corners = [(300, 200), (700, 220), (650, 520), (320, 480)]
    meant = viewer.page.evaluate("corners => corners.map(p => window.twinMap.unproject(p).toArray())", corners)
    for x, y in corners:
        viewer.page.mouse.click(box["x"] + x, box["y"] + y)
    with viewer.page.expect_request("**/query/intersects") as sent:
        viewer.page.mouse.dblclick(box["x"] + corners[-1][0], box["y"] + corners[-1][1])
    ring = json.loads(sent.value.post_data)["geometry"]["coordinates"][0]
    assert sum(ring[:-1], []) == pytest.approx(sum(meant, []), abs=1e-9) and ring[-1] == ring[0]
    rows = viewer.page.locator("#panel .counts tr[data-layer=city_components]")
    rows.wait_for(timeout=10_000)
    with engine.connect() as conn:
        expected = conn.execute(text("SELECT count(*) FROM layers.city_components "
                                     "WHERE ST_Intersects(geom, ST_GeomFromText(:wkt, 4490))"),
                                {"wkt": shapely.Polygon(ring).wkt}).scalar()
    assert expected > 0
    assert rows.locator("strong").inner_text() == str(expected)
    panel = viewer.page.locator("#panel").inner_text()
    assert "面积" in panel and "平方" in panel and "周长" in panel
    # The area shown is the polygon's, computed independently on the ellipsoid.
    area = abs(pyproj.Geod(ellps="WGS84").geometry_area_perimeter(shapely.Polygon(ring))[0]) / 1e6
    shown = float(re.search(r"面积\s*([\d.]+) 平方千米", panel).group(1))
    assert shown == pytest.approx(area, rel=0.005)


def test_the_time_slider_shows_the_past_and_what_changed_since(viewer, engine):
    # The day before the district was loaded (in the local time the browser shares), not "yesterday" by
    # the clock: a run that crosses midnight loaded it yesterday.
    with engine.connect() as conn:
        loaded = conn.execute(text("SELECT min(changed_at) FROM twin.change WHERE layer IN ('roads', 'monitoring_stations')")).scalar()
    before = (loaded.astimezone().date() - datetime.timedelta(days=1)).isoformat()
    viewer.open(f"map=13/31.535/120.40&layers=roads,monitoring_stations&t={before}")
    # That day's map has none of the district, and all of it is new since.
    assert viewer.rendered() == {}
    assert any("as_of=" in url for url in viewer.urls if "/tiles/onemap/" in url)
    assert viewer.page.locator("#time-label").inner_text() == f"{before} 时"
    with engine.connect() as conn:
        counts = {layer: conn.execute(text(f"SELECT count(*) FROM layers.{layer}")).scalar()
                  for layer in ("roads", "monitoring_stations")}
    for layer, n in counts.items():
        added = viewer.page.locator(f"#changes .change-row[data-layer={layer}] [data-kind=added]")
        added.wait_for(timeout=15_000)
        assert added.inner_text() == f"新增 {n}"
    viewer.idle()
    highlighted = viewer.page.evaluate("window.twinMap.queryRenderedFeatures({layers: ['changes-line', 'changes-point']}).length")
    assert highlighted > 0
    viewer.page.eval_on_selector("#time-slider", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    viewer.page.wait_for_function("!location.hash.includes('t=')")
    viewer.page.locator("#changes").wait_for(state="hidden")
    viewer.idle()
    assert viewer.rendered().get("roads", 0) > 0
    assert viewer.page.locator("#time-label").inner_text() == "现在"
