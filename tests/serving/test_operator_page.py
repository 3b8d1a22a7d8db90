"""The operator page at ``/``: served with no outside resources, and working in a real browser.

The browser test drives Debian's ``chromium`` through ``chromedriver`` with Selenium
(installed by ``make test`` where it can be: see the Makefile). Nothing is downloaded at run
time; where the browser or Selenium is missing the test is skipped with the reason. It
posts frames with line keys, signs in with an operator key, waits for the gallery to show
the NG ones, opens one, checks the detail view and saves a screenshot to
``tests/artifacts/operator_page.png``. A second test works through the review queue with the
keyboard and the mouse (confirm, flip, a box) on the ``/station`` app, which keeps OK frames
too (``frames: ng+sample``), and saves ``tests/artifacts/review_queue.png``.
"""

import re
import shutil
from pathlib import Path

import pytest
import requests

from tests.serving.test_decisions import deploy_logged_app, defect_frame, post
from tests.serving.images import textured

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def service(serve_url, tmp_path_factory, api_keys):
    access = {"keys_file": str(api_keys.file)}
    deploy_logged_app("page", "/", {"folder": str(tmp_path_factory.mktemp("page-log") / "log")}, access)
    # keeps every OK frame too (a sample rate of 1), so the review queue holds both kinds
    station_log = {"folder": str(tmp_path_factory.mktemp("station-log") / "log"), "frames": "ng+sample",
                   "ok_sample_rate": 1.0}
    deploy_logged_app("station", "/station", station_log, access)
    return serve_url


def test_the_page_and_its_assets_come_from_the_service_alone(service, api_keys):
    for prefix in ("", "/station"):
        signed_in = requests.Session()
        refused = signed_in.get(service + prefix + "/", allow_redirects=False, timeout=30)
        assert refused.status_code == 303 and refused.headers["location"] == f"{prefix}/signin"
        session = signed_in.post(service + prefix + "/v1/session", headers=api_keys.header("operator"), timeout=30)
        assert session.status_code == 200, session.text
        for path, script in (("/", "app.js"), ("/signin", "signin.js")):
            page = signed_in.get(service + prefix + path, timeout=30)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in page.headers["content-security-policy"]
            links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
            assert links == [f"{prefix}/operator/style.css", f"{prefix}/operator/{script}"]
            assert "http://" not in page.text and "https://" not in page.text
            for link in links:
                asset = requests.get(service + link, timeout=30)
                assert asset.status_code == 200 and "http://" not in asset.text and "https://" not in asset.text
    assert requests.get(service + "/operator/../serving/api.py", timeout=30).status_code == 404


def _browser():
    """A headless Chromium driven by Selenium, or ``pytest.skip`` saying what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    binary = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("chromium or chromedriver is not installed (apt-get install chromium chromium-driver; "
                    "`make test` does it where it may)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, refused loads
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1600,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_an_operator_signs_in_sees_the_ng_gallery_and_opens_a_detail_view(service, api_keys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as conditions
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = _browser()
    try:
        ng_ids = []
        for index in range(4):  # two lines; every other frame carries a defect
            frame = defect_frame(index, 120, 160) if index % 2 == 0 else textured(120, 160, seed=index)
            line = f"L{1 + index // 2}"
            body = post(service, frame, api_keys.header(f"line-{line}"), line=line, station="cam-1",
                        part_id=f"P-{index}").json()
            assert body["decision_log"]["status"] == "logged"
            if body["decision"] == "NG":
                ng_ids.append(body["request_id"])
        assert len(ng_ids) == 2

        wait = WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException])
        _sign_in(browser, wait, service + "/", api_keys.tokens["operator"])
        cookies = browser.get_cookies()
        assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("jaffnet_session", True, "Strict")]
        assert browser.execute_script("return document.cookie") == ""  # out of the page scripts' reach
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery .card")) == 2)
        cards = browser.find_elements(By.CSS_SELECTOR, "#gallery .card")
        assert [card.get_attribute("data-request-id") for card in cards] == list(reversed(ng_ids))
        wait.until(lambda b: all(b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                                  image) for image in b.find_elements(By.CSS_SELECTOR, "#gallery img")))
        assert "bright-spot" in browser.find_element(By.ID, "model").text
        counts = {row.get_attribute("data-line"): row.text.split()
                  for row in browser.find_elements(By.CSS_SELECTOR, "#counts tbody tr")}
        assert counts == {"L1": ["L1", "1", "1", "50.0"], "L2": ["L2", "1", "1", "50.0"]}

        cards[0].click()
        detail = wait.until(conditions.visibility_of_element_located((By.ID, "detail")))
        assert browser.find_element(By.ID, "detail-decision").text == "NG"
        assert ng_ids[-1] in detail.text and "P-2" in detail.text and "cam-1" in detail.text
        regions = browser.find_elements(By.CSS_SELECTOR, "#detail-regions tbody tr")
        assert len(regions) == 1 and regions[0].text.split()[1:5] == ["30", "12", "8", "6"]
        wait.until(lambda b: b.execute_script("const i = document.getElementById('detail-image');"
                                              "return i.complete && i.naturalWidth === 160"))
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "operator_page_detail.png"))

        browser.find_element(By.ID, "detail-close").click()
        Select(browser.find_element(By.ID, "line-filter")).select_by_value("L1")
        wait.until(lambda b: [c.get_attribute("data-request-id")
                              for c in b.find_elements(By.CSS_SELECTOR, "#gallery .card")] == [ng_ids[0]])
        Select(browser.find_element(By.ID, "line-filter")).select_by_value("")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery .card")) == 2)
        browser.save_screenshot(str(ARTIFACTS / "operator_page.png"))
        severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == [], severe  # no script error, no refused (CSP) or failed load
    finally:
        browser.quit()


def _sign_in(browser, wait, page_url: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    wait.until(lambda b: b.current_url == page_url + "signin")  # no session yet
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.ID, "signin").click()
    wait.until(lambda b: b.current_url == page_url)


def _queue_shows(browser, request_id: str) -> bool:
    """The queue's current item is ``request_id`` and its frame has loaded (160 x 120)."""
    return browser.execute_script(
        "const i = document.getElementById('queue-image');"
        "return i.complete && i.naturalWidth === 160 && i.src.includes(arguments[0]);", request_id)


def _drag_box(browser, frame_box: dict) -> None:
    """Drag the mouse over ``frame_box`` (frame pixels) on the queue's canvas, as an operator would."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = browser.find_element(By.ID, "queue-boxes")
    # where the frame lies in the canvas (the image is shown with object-fit: contain)
    width, height, natural_width, natural_height = browser.execute_script(
        "const i = document.getElementById('queue-image'); const r = i.getBoundingClientRect();"
        "return [r.width, r.height, i.naturalWidth, i.naturalHeight];")
    scale = min(width / natural_width, height / natural_height)
    left, top = (width - natural_width * scale) / 2, (height - natural_height * scale) / 2

    def from_centre(x, y):  # Selenium's element offsets count from the element's centre
        return round(left + x * scale - width / 2), round(top + y * scale - height / 2)

    start = from_centre(frame_box["x"], frame_box["y"])
    end = from_centre(frame_box["x"] + frame_box["width"], frame_box["y"] + frame_box["height"])
    (ActionChains(browser).move_to_element_with_offset(canvas, *start).click_and_hold()
     .move_by_offset(end[0] - start[0], end[1] - start[1]).release().perform())


def test_an_operator_works_through_the_review_queue_with_the_keyboard(service, api_keys):
    """Confirm (C), flip (F) and a drawn box (B, drag, Enter) through the page, then the API shows the
    three reviews and the line-quality panel the line. (403 for a line key: test_decisions.py.)"""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    station = service + "/station"
    posted = {}  # part id -> (request id, decision), oldest first
    for index, part in enumerate(("P-confirm", "P-flip", "P-box")):
        frame = textured(120, 160, seed=index) if part == "P-flip" else defect_frame(index, 120, 160)
        body = post(station, frame, api_keys.header("line-L1"), line="L1", station="cam-9", part_id=part).json()
        assert body["decision_log"]["status"] == "logged"
        posted[part] = (body["request_id"], body["decision"])
    assert [decision for _, decision in posted.values()] == ["NG", "OK", "NG"]
    ids = {part: request_id for part, (request_id, _) in posted.items()}

    browser = _browser()
    try:
        wait = WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException])
        _sign_in(browser, wait, station + "/", api_keys.tokens["operator"])
        browser.find_element(By.ID, "show-queue").click()
        keys = ActionChains(browser)

        # newest first: the box, then the flip, then the confirmation
        wait.until(lambda b: _queue_shows(b, ids["P-box"]))
        assert browser.find_element(By.ID, "queue-position").text.startswith("1 of 3")
        assert browser.find_element(By.ID, "queue-decision").text == "NG"
        assert "P-box" in browser.find_element(By.ID, "queue-facts").text
        keys.send_keys("m").perform()  # the plain frame, then the model's overlay again
        wait.until(lambda b: b.find_element(By.ID, "queue-image").get_attribute("src").endswith("/frame.png"))
        keys.send_keys("m").perform()
        wait.until(lambda b: _queue_shows(b, ids["P-box"] + "/overlay.png"))
        spot = {"x": 28, "y": 10, "width": 12, "height": 10}  # around defect_frame(2)'s 8 x 6 spot at (30, 12)
        keys.send_keys("b").perform()
        _drag_box(browser, spot)
        assert "1 box marked" in browser.find_element(By.ID, "queue-box-state").text
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "review_queue.png"))
        keys.send_keys(Keys.ENTER).perform()
        wait.until(lambda b: _queue_shows(b, ids["P-flip"]))
        assert "confirmed NG" in browser.find_element(By.ID, "queue-done").text
        assert browser.find_element(By.ID, "queue-box-state").text == ""  # the boxes stay with their frame

        assert browser.find_element(By.ID, "queue-decision").text == "OK"
        keys.send_keys("b").perform()  # a box says NG: confirming the model's OK with it is refused on the spot
        _drag_box(browser, spot)
        keys.send_keys("c").perform()
        assert "press F to make it NG" in browser.find_element(By.ID, "queue-alert").text
        keys.send_keys("u").perform()
        assert not browser.find_element(By.ID, "queue-box-state").is_displayed()
        keys.send_keys("f").perform()
        wait.until(lambda b: _queue_shows(b, ids["P-confirm"]))
        assert "flipped to NG" in browser.find_element(By.ID, "queue-done").text

        keys.send_keys("c").perform()
        wait.until(lambda b: b.find_element(By.ID, "queue-empty").is_displayed())
        assert browser.find_element(By.ID, "queue-alert").is_displayed() is False

        reviews = {part: requests.get(f"{station}/v1/decisions/{request_id}", headers=api_keys.header("operator"),
                                      timeout=30).json()["review"] for part, request_id in ids.items()}
        assert {part: (r["verdict"], r["agrees"], r["reviewer"]["role"]) for part, r in reviews.items()} == {
            "P-confirm": ("NG", True, "operator"), "P-flip": ("NG", False, "operator"),
            "P-box": ("NG", True, "operator")}
        assert reviews["P-confirm"]["regions"] == [] and reviews["P-flip"]["regions"] == []
        [box] = reviews["P-box"]["regions"]
        assert all(abs(box[side] - spot[side]) <= 1 for side in spot), box  # frame pixels, within a pixel

        browser.find_element(By.ID, "show-monitor").click()  # the panel reloads when the monitor shows
        # Read in one script call: the panel re-renders on its own timer, so elements found one call
        # earlier can be gone (stale) by the next.
        quality_row = """return [...document.querySelectorAll('#quality tbody tr[data-line="L1"] td')]
                         .map((cell) => cell.innerText.trim());"""
        wait.until(lambda b: b.execute_script(quality_row)[:5] == ["L1", "3", "1 / 2", "1", "0"])
        cells = browser.execute_script(quality_row)
        # the flipped OK frame is the one defective part passed, of three (rates with 95 % upper bounds)
        assert cells[5].startswith("33.3 % (≤ ") and "(≤ " in cells[6], cells
        severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == [], severe
    finally:
        browser.quit()
