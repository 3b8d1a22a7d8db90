"""The operator page at ``/``: served with no outside resources, and working in a real browser.

The browser test drives Debian's ``chromium`` through ``chromedriver`` with Selenium
(installed by ``make test`` where it can be: see the Makefile). Nothing is downloaded at run
time; where the browser or Selenium is missing the test is skipped with the reason. It
posts frames with line keys, signs in with an operator key, waits for the gallery to show
the NG ones, opens one, checks the detail view and saves a screenshot to
``tests/artifacts/operator_page.png``.
"""

import re
import shutil
from pathlib import Path

import pytest
import requests

from tests.serving.test_decisions import deploy_logged_app, defect_frame, post
from tests.serving.images import textured
from tests.serving.test_service import _free_port

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory, api_keys):
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    access = {"keys_file": str(api_keys.file)}
    try:
        deploy_logged_app("page", "/", {"folder": str(tmp_path_factory.mktemp("page-log") / "log")}, access)
        deploy_logged_app("station", "/station", {"folder": str(tmp_path_factory.mktemp("station-log") / "log")},
                          access)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


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

        browser.get(service + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.current_url == service + "/signin")  # no session yet
        browser.find_element(By.ID, "key").send_keys(api_keys.tokens["operator"])
        browser.find_element(By.ID, "signin").click()
        wait.until(lambda b: b.current_url == service + "/")
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
