"""The one-map viewer on a phone (390×844, touch, as an iPhone 13 in Debian's Chromium): the map
fills the screen, the layer panel starts closed and opens with a tap, the bar is one line, and a
station's popup and chart stay on screen and legible."""

import pytest
from PIL import Image, ImageStat

from tests.test_viewer import Page, _station, chromium

WIDTH, HEIGHT = 390, 844


@pytest.fixture(scope="module")
def phone_browser(tmp_path_factory):
    size = {"width": WIDTH, "height": HEIGHT}
    with chromium(tmp_path_factory.mktemp("chromium-phone"), "iPhone 13", viewport=size, screen=size) as context:
        probe = context.new_page()  # a phone's pixels, touch and width, as the iPhone 13 has them
        assert probe.evaluate("[devicePixelRatio, navigator.maxTouchPoints > 0, screen.width]") == [3, True, WIDTH]
        probe.close()
        yield context


@pytest.fixture
def phone(phone_browser, server):
    page = Page(phone_browser, server)
    yield page
    page.page.close()


def box(page, selector):
    return page.locator(selector).bounding_box()


def overlap(a, b) -> float:
    """The area two boxes share (0 for a hidden element, whose box is None)."""
    if not a or not b:
        return 0.0
    w = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    h = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return max(w, 0) * max(h, 0)


def inside(inner, outer, slack=0.5) -> bool:
    return (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack)


SCREEN = {"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT}


def test_phone_opens_on_the_map_with_the_panel_closed(phone, tmp_path):
    phone.open()
    page = phone.page
    map_box = box(page, "#map")
    canvas = box(page, "#map canvas.maplibregl-canvas")
    assert map_box["width"] >= WIDTH - 1 and map_box["height"] > 0.85 * HEIGHT, map_box
    assert canvas["width"] >= WIDTH - 1 and canvas["height"] > 0.85 * HEIGHT, canvas
    assert overlap(box(page, "#sidebar"), map_box) < 0.05 * map_box["width"] * map_box["height"]
    assert page.locator("#toggle-sidebar").get_attribute("aria-expanded") == "false"
    assert sum(phone.rendered().values()) > 100

    # One line: the layers button, the search box and the ⋯ menu side by side across the width.
    bar = box(page, ".topbar")
    assert bar["height"] < 64, bar
    items = [box(page, s) for s in ("#toggle-sidebar", "#search-input", "#menu-button")]
    for item in items:
        assert inside(item, {"x": 0, "y": 0, "width": WIDTH, "height": bar["height"]}), item
    centres = [item["y"] + item["height"] / 2 for item in items]
    assert max(centres) - min(centres) < 4, centres
    assert items[0]["x"] + items[0]["width"] <= items[1]["x"] <= items[1]["x"] + items[1]["width"] <= items[2]["x"]
    assert items[1]["width"] > 0.45 * WIDTH, "the search box gets most of the bar"
    assert page.eval_on_selector(".topbar", "bar => bar.scrollWidth <= bar.clientWidth")
    assert page.locator("#toggle-sidebar").inner_text().replace("☰", "").strip() == "图层"
    for hidden in ("#time-slider", "#time-date", "#measure-button", ".topbar h1"):
        assert not page.locator(hidden).is_visible(), hidden

    # The time controls and the measuring tool are in the ⋯ menu, on screen when it opens.
    page.tap("#menu-button")
    assert page.locator("#menu-button").get_attribute("aria-expanded") == "true"
    for shown in ("#time-slider", "#time-date", "#time-label", "#measure-button"):
        assert page.locator(shown).is_visible(), shown
        assert inside(box(page, shown), SCREEN), shown
    menu = box(page, "#menu")
    assert menu["y"] + menu["height"] < 0.5 * HEIGHT
    page.tap("#menu-button")
    assert not page.locator("#time-slider").is_visible()

    # A tap opens the layer panel as a drawer over part of the map; its switches work by touch.
    page.tap("#toggle-sidebar")
    sidebar = box(page, "#sidebar")
    assert page.locator("#toggle-sidebar").get_attribute("aria-expanded") == "true"
    assert sidebar["x"] == 0 and sidebar["width"] <= 0.9 * WIDTH and sidebar["height"] > 0.8 * map_box["height"]
    roads = page.locator("#layer-tree input[type=checkbox][data-layer=roads]")
    roads.scroll_into_view_if_needed()  # the drawer scrolls: open alerts and cases list above the layer tree
    assert inside(roads.bounding_box(), SCREEN)
    assert phone.rendered().get("roads", 0) > 0
    roads.tap()
    phone.idle()
    assert phone.rendered().get("roads", 0) == 0
    # Touching the map beside the drawer puts it away.
    page.touchscreen.tap(WIDTH - 15, map_box["y"] + 0.3 * map_box["height"])
    page.locator("#sidebar").wait_for(state="hidden")
    assert page.locator("#toggle-sidebar").get_attribute("aria-expanded") == "false"

    shot = tmp_path / "phone.png"
    page.screenshot(path=str(shot))
    image = Image.open(shot)
    assert image.size == (3 * WIDTH, 3 * HEIGHT)
    assert ImageStat.Stat(image.convert("L")).stddev[0] > 20, "the screenshot is blank"
    assert not phone.errors, phone.errors


LEGIBILITY = """() => {
  const svg = document.querySelector('#panel .line-chart');
  const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
  const px = node => parseFloat(getComputedStyle(node).fontSize);
  const popup = document.querySelector('.maplibregl-popup .popup-scroll');
  return {
    popupText: Math.min(...[...document.querySelectorAll('.maplibregl-popup th, .maplibregl-popup td')].map(px)),
    panelText: px(document.querySelector('#panel .station-meta')),
    chartTicks: Math.min(...[...svg.querySelectorAll('.tick')].map(t => px(t) * scale)),
    popupScrollsSideways: popup.scrollWidth > popup.clientWidth,
  };
}"""


def test_a_station_on_a_phone_shows_popup_and_chart_on_screen(phone, engine, tmp_path):
    code, name, lng, lat = _station(engine)
    phone.open(f"map=15/{lat}/{lng}")
    page = phone.page
    point = page.evaluate("([lng, lat]) => window.twinMap.project([lng, lat])", [lng, lat])
    map_box = box(page, "#map")
    page.touchscreen.tap(map_box["x"] + point["x"], map_box["y"] + point["y"])
    popup = page.locator(".maplibregl-popup")
    popup.wait_for(timeout=10_000)
    page.locator("#panel .line-chart circle").first.wait_for(timeout=10_000)
    phone.idle()
    assert name in popup.inner_text() and name in page.locator("#panel").inner_text()

    # The panel is a sheet across the bottom; the popup sits above it, all of it on screen.
    sheet = box(page, "#panel")
    assert sheet["x"] == 0 and sheet["width"] == WIDTH
    assert sheet["y"] + sheet["height"] == pytest.approx(HEIGHT, abs=1)
    assert sheet["height"] <= 0.56 * map_box["height"]
    shown = popup.bounding_box()
    bar = box(page, ".topbar")
    assert inside(shown, {"x": 0, "y": bar["height"], "width": WIDTH, "height": sheet["y"] - bar["height"]}), \
        (shown, sheet)
    chart = box(page, "#panel .line-chart")
    assert inside(chart, sheet), (chart, sheet)
    assert chart["width"] > 0.85 * WIDTH

    sizes = page.evaluate(LEGIBILITY)
    assert sizes["popupText"] >= 12 and sizes["panelText"] >= 12, sizes
    assert sizes["chartTicks"] >= 11, sizes
    assert not sizes["popupScrollsSideways"], sizes

    page.screenshot(path=str(tmp_path / "phone-station.png"))
    page.tap("#panel-close")
    assert not page.locator("#panel").is_visible()
    assert not phone.errors, phone.errors
