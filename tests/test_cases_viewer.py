"""The case panel in a real browser (Debian's Chromium via Playwright, as tests/test_viewer.py): the queue
filtered by state and overdue, a case's timeline with its photo, cases drawn by state, heat by grid."""

import base64

import pytest
from sqlalchemy import text

from tests.case_support import fresh, jpeg_with_gps, key, places, report, step
from tests.test_viewer import Page, browser  # noqa: F401 (the module's browser fixture)

playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def cases(server, engine):
    import httpx

    dispatcher = key(engine, "数字城管指挥中心", "dispatcher")
    place = places(engine, 1)[0]
    with httpx.Client(base_url=server, timeout=30) as http:
        made = [report(http, fresh(place), "E0102", headers=dispatcher,
                       photos=[base64.b64encode(jpeg_with_gps()).decode()]).json() for _ in range(2)]
        assert step(http, made[0]["case_no"], "register", dispatcher).status_code == 200
    with engine.begin() as conn:
        conn.execute(text("UPDATE layers.cases SET stage_due = now() - interval '2 hours' WHERE case_no = :n"),
                     {"n": made[1]["case_no"]})
    return dispatcher["Authorization"].removeprefix("Bearer "), made, place


def test_the_case_panel_lists_filters_and_shows_a_timeline_with_photos(browser, server, cases):  # noqa: F811
    secret, made, place = cases
    viewer = Page(browser, server)
    try:
        viewer.open(f"map=16/{place['lat']}/{place['lon']}")
        assert viewer.rendered().get("cases", 0) > 0, "cases are drawn on the map"
        page = viewer.page
        page.locator("#cases-button").click()
        page.locator("#case-key").fill(secret)
        page.locator("form.case-key button").click()
        page.locator(f"li[data-case={made[0]['case_no']}]").wait_for(timeout=10_000)
        page.locator("#case-state").select_option("立案")
        page.locator(f"li[data-case={made[1]['case_no']}]").wait_for(state="detached", timeout=10_000)
        assert page.locator(f"li[data-case={made[0]['case_no']}]").count() == 1
        page.locator("#case-state").select_option("")
        page.locator("#case-overdue").check()
        page.locator(f"li[data-case={made[0]['case_no']}]").wait_for(state="detached", timeout=10_000)
        page.locator(f"li[data-case={made[1]['case_no']}] .overdue").wait_for(timeout=10_000)
        page.locator(f"li[data-case={made[1]['case_no']}]").click()
        page.locator(".case-timeline li").first.wait_for(timeout=10_000)
        assert "上报" in page.locator(".case-timeline").inner_text()
        page.wait_for_function("document.querySelector('.case-photos img')?.naturalWidth === 64", timeout=10_000)
        page.locator("button", has_text="返回列表").click()
        page.locator("#case-heat-button").click()
        page.wait_for_function("document.body.dataset.caseHeat > 0", timeout=20_000)
        assert page.evaluate("window.twinMap.getLayer('case-heat') !== undefined")
        assert not [e for e in viewer.errors if "case" in e.lower()], viewer.errors
    finally:
        viewer.page.close()
