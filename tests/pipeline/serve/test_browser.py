"""`pipeline serve` in a real headless browser (Debian's chromium and chromedriver, driven by
Selenium): the grid's filters, a row's page, search, and hostile captions that must not run."""

import os
import shutil

import pytest

import manifests
from pipeline.testing.browser import CHROMIUM_FLAGS
from tests.pipeline.embed.test_search import embedded  # noqa: F401 - a fixture used below
from tests.pipeline.serve.conftest import JS_URL, QUOTES, SCRIPT, Running


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no chromium + chromedriver here (.ci/run installs Debian's packages)")
    os.environ["SE_AVOID_STATS"] = "true"  # Selenium: no usage statistics sent anywhere
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, "--window-size=1280,1000"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(30)
    yield session
    session.quit()


def _by_css(browser, selector):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, selector)


def _submit(browser, element=None) -> None:
    """Click the filter form's button (or `element`) and wait for the next page to load.

    The old page is marked with a window property that a new document does not have. Waiting
    for an element to go stale instead races the navigation: chromedriver can answer "node does
    not belong to the document" rather than "stale", which Selenium does not treat as stale."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    element = element or _by_css(browser, "form.filters button")[0]
    browser.execute_script("window.__beforeSubmit = true")
    element.click()
    loaded = "return window.__beforeSubmit !== true && document.readyState === 'complete'"
    # A script sent while the page unloads can fail; the next poll asks the new document.
    wait = WebDriverWait(browser, 20, ignored_exceptions=(WebDriverException,))
    wait.until(lambda b: b.execute_script(loaded))


def _cards(browser) -> list[str]:
    return [card.get_attribute("data-uid") for card in _by_css(browser, ".card")]


def _images_loaded(browser) -> list[bool]:
    """Whether each image on the page decoded (lazy ones scrolled into view first)."""
    import time

    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    script = "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
    deadline = time.monotonic() + 10
    while not all(loaded := browser.execute_script(script)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return loaded


def _uids(root, where: str) -> list[str]:
    return [
        r[0]
        for r in manifests.open(root).execute(f"SELECT uid FROM samples WHERE {where}").fetchall()
    ]


@pytest.mark.timeout(180)
def test_grid_filters_as_a_user_clicks_them(browser, served, hostile, tmp_path):
    from selenium.webdriver.support.ui import Select

    browser.get(served.base + "/grid")
    assert sorted(_cards(browser)) == sorted(_uids(hostile, "TRUE"))
    assert all(_images_loaded(browser)) and len(_images_loaded(browser)) >= 11
    browser.save_screenshot(str(tmp_path / "grid.png"))

    Select(_by_css(browser, "select[name=status]")[0]).select_by_value("duplicate")
    _submit(browser)
    assert "status=duplicate" in browser.current_url
    assert sorted(_cards(browser)) == sorted(_uids(hostile, "status = 'duplicate'"))
    assert "same bytes and caption as" in _by_css(browser, ".card .err")[0].text  # the reason
    assert all(_images_loaded(browser))  # a dropped row's image, from work/images

    Select(_by_css(browser, "select[name=status]")[0]).select_by_value("kept")
    box = _by_css(browser, "input[name=query]")[0]
    box.clear()
    box.send_keys("fish")
    _submit(browser)
    want = _uids(hostile, "status = 'kept' AND list_contains(matched_queries, 'fish')")
    assert sorted(_cards(browser)) == sorted(want) and len(want) >= 3

    browser.get(served.base + "/queries")
    link = next(a for a in _by_css(browser, "#queries a") if "query=owl" in a.get_attribute("href"))
    _submit(browser, link)
    assert sorted(_cards(browser)) == sorted(
        _uids(hostile, "status = 'kept' AND list_contains(matched_queries, 'owl')")
    )


@pytest.mark.timeout(180)
def test_a_leak_shows_beside_the_eval_image_it_copies(browser, served, hostile):
    leak = _uids(hostile, "status = 'eval_leak'")[0]
    browser.get(served.base + f"/row/{leak}")
    assert _by_css(browser, "#leak img") and all(_images_loaded(browser))
    assert len(_images_loaded(browser)) == 2
    assert "pets/cat/cat.png" in _by_css(browser, "#leak")[0].text
    names = [th.text for th in _by_css(browser, "#columns th")]
    assert set(names) >= set(manifests.schema.SAMPLES.names)
    _submit(browser, _by_css(browser, "#leak a")[0])  # all its copies, in the grid
    assert sorted(_cards(browser)) == sorted(_uids(hostile, "leak_of = 'pets/cat/cat.png'"))

    dup = _uids(hostile, "status = 'duplicate'")[0]
    browser.get(served.base + f"/row/{dup}")
    cluster = _cards(browser)  # the cards on a row page are its cluster
    original = (
        manifests.open(hostile)
        .execute("SELECT dup_of FROM samples WHERE uid = ?", [dup])
        .fetchone()[0]
    )
    assert cluster == [original]
    browser.get(served.base + f"/row/{original}")
    assert _cards(browser) == [dup]


@pytest.mark.timeout(180)
def test_hostile_captions_and_urls_never_run(browser, served, hostile):
    script_row = _uids(hostile, f"caption = '{SCRIPT.replace(chr(39), chr(39) * 2)}'")[0]
    quotes_row = _uids(hostile, f"caption = '{QUOTES.replace(chr(39), chr(39) * 2)}'")[0]
    js_row = _uids(hostile, f"url = '{JS_URL.replace(chr(39), chr(39) * 2)}'")[0]
    pages = [
        "/grid",
        "/grid?status=dropped",
        f"/row/{script_row}",
        f"/row/{quotes_row}",
        f"/row/{js_row}",
        "/grid?text=%3Cscript%3Edocument.title%3D%22pwned%22%3C%2Fscript%3E",
        "/grid?query=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
        "/grid?status=%3Cscript%3Ealert(1)%3C%2Fscript%3E",  # reflected in the error page
        "/report",
    ]
    for page in pages:
        browser.get(served.base + page)
        # a planted script would have changed the title or opened a dialog
        assert browser.title not in ("pwned", "1"), page
        from selenium.common.exceptions import NoAlertPresentException

        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - the access itself raises
        assert _by_css(browser, "script") == [], page
        assert _by_css(browser, "img[src='x'], [onerror], [onmouseover]") == [], page
        hrefs = [a.get_attribute("href") or "" for a in _by_css(browser, "a")]
        assert not [h for h in hrefs if h.lower().startswith("javascript:")], page
    browser.get(served.base + f"/row/{script_row}")
    assert SCRIPT in browser.find_element("tag name", "h1").text  # shown, as text
    browser.get(served.base + f"/row/{js_row}")
    assert JS_URL in browser.find_element("tag name", "main").text


@pytest.fixture(scope="module")
def embedded_served(embedded):  # noqa: F811 - the fixture imported above
    from pipeline.serve.app import create_app

    running = Running(create_app(embedded[0]))
    yield running, embedded
    running.close()


@pytest.mark.timeout(900)
def test_search_by_text_then_by_image(browser, embedded_served):
    running, (root, truth, _) = embedded_served
    browser.get(running.base + "/search")
    box = _by_css(browser, "input[name=text]")[0]
    box.send_keys("a purple circle")
    _submit(browser)
    from pipeline.embed.search import search

    shown = _cards(browser)
    assert shown == [h.uid for h in search(root, text="a purple circle", k=48)]  # same ranking
    urls = [card.find_element("css selector", ".meta a").text for card in _by_css(browser, ".card")]
    # the tiny model knows colours well, shapes less (see tests/pipeline/embed/test_search.py)
    assert [truth[u][0] for u in urls[:3]] == ["purple"] * 3
    assert all(_images_loaded(browser))
    first = shown[0]
    browser.get(running.base + f"/row/{first}")
    _submit(browser, _by_css(browser, "a[href^='/search?like=']")[0])
    assert "like=" in browser.current_url and first not in _cards(browser)
    urls = [card.find_element("css selector", ".meta a").text for card in _by_css(browser, ".card")]
    assert [truth[u][0] for u in urls[:4]] == [truth[urls[0]][0]] * 4 == ["purple"] * 4


@pytest.mark.timeout(900)
def test_clip_score_range_reads_the_embeddings_scores(browser, embedded_served):
    running, (root, _, _) = embedded_served
    browser.get(running.base + "/grid?status=kept&clip_min=0.2&clip_max=1")
    want = _uids(root, "status = 'kept' AND clip_score BETWEEN 0.2 AND 1")
    shown = _cards(browser)
    assert want and set(shown) <= set(want) and len(shown) == min(48, len(want))
    assert _by_css(browser, "#total")[0].text.startswith(f"{len(want):,} rows match")
    scores = [
        float(s.text.split()[1])
        for s in _by_css(browser, ".card .meta")
        if s.text.startswith("clip ")
    ]
    assert scores and min(scores) >= 0.2
