"""The web view in a real browser: Debian's chromium, headless, driven by Selenium through
chromedriver, against a real `melanged --http` over TLS on a loopback port.

An operator's round: sign in with a reader's token, open a network, open a block and
read its map, open a /24 of a big block, search a MAC and land on its address, read
history, sign out and find every page visited closed. Then the same pages on a
phone's width and at 200% zoom: nothing wider than the screen, and every text's
contrast at WCAG AA. Screenshots of each step are written beside the test's files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from melange import operations
from melange.store import Store
from tests.support.http_daemon import MelangedHttp, make_certificate, make_tokens

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 60  # seconds: generous, the CI machine is busy
MAC = "02:00:00:00:20:05"

# The WCAG 2 contrast of every element's own text against the background it sits on.
CONTRAST_JS = """
function rgb(text) { return (text.match(/[\\d.]+/g) || []).map(Number); }
function lum(c) {
  const f = v => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
}
function background(el) {
  for (; el; el = el.parentElement) {
    const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c;
  }
  return [255, 255, 255];
}
const low = [];
for (const el of document.querySelectorAll('body *')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.offsetParent === null || el.tagName === 'METER') continue;
  const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) low.push(el.tagName + '.' + el.className + ': ' + ratio.toFixed(2));
}
return low;
"""
OVERFLOW_JS = "return document.documentElement.scrollWidth - window.innerWidth;"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """melanged serving a store of two blocks, and a reader's token."""
    workdir = tmp_path_factory.mktemp("webui-browser")
    db = f"sqlite:///{workdir / 'store.db'}"
    token = make_tokens(db)["reader"]
    store = Store(db)
    try:
        for name, params in [
            ("block.create", {"cidr": "10.20.0.0/24", "name": "web", "network": "prod",
                              "gateway": "10.20.0.1", "dns": ["10.20.0.53"]}),
            ("block.create", {"cidr": "10.21.0.0/16", "name": "pool", "network": "prod"}),
            ("block.allocate", {"block": "web", "count": 3}),
            ("block.allocate", {"block": "web", "mac": MAC, "hostname": "db-1"}),
            ("ip.release", {"address": "10.20.0.3"}),
            ("block.allocate", {"block": "pool", "count": 700}),
        ]:  # fmt: skip
            operations.run(store, name, params)
    finally:
        store.close()
    cert, key = make_certificate(workdir)
    daemon = MelangedHttp(workdir, [], tls=True)
    daemon.argv += ["--db", db, "--http", f"127.0.0.1:{daemon.port}",
                    "--tls-cert", str(cert), "--tls-key", str(key)]  # fmt: skip
    daemon.start()
    try:
        daemon.wait_serving(timeout=WAIT)
        yield daemon.url(), token, workdir
    finally:
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def browser(site):
    """One headless chromium for the module (Debian's, no download)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} is missing: scripts/ensure-system-deps.sh installs it"
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    options.accept_insecure_certs = True  # the test's own CA, unknown to the browser
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


class Round:
    """The browser on the site: go, click, wait, and a screenshot of each step."""

    def __init__(self, driver: WebDriver, url: str, token: str, shots: Path) -> None:
        self.driver, self.url, self.token, self.shots = driver, url, token, shots
        self.visited: list[str] = []

    def go(self, path: str) -> None:
        self.driver.get(self.url + path)

    def wait(self, condition) -> None:
        WebDriverWait(self.driver, WAIT).until(condition)

    def click(self, text: str) -> None:
        page = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.LINK_TEXT, text).click()
        self.wait(seen.staleness_of(page))

    def h1(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "h1").text

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), name
        self.visited.append(self.driver.current_url)
        return path

    def sign_in(self) -> None:
        self.go("/ui/")
        if not self.driver.current_url.endswith("/ui/login"):
            return  # still signed in
        self.driver.find_element(By.ID, "token").send_keys(self.token)
        self.driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        self.wait(seen.url_to_be(self.url + "/ui/"))


@pytest.fixture
def visit(browser, site):
    url, token, workdir = site
    shots = workdir / "screenshots"
    shots.mkdir(exist_ok=True)
    return Round(browser, url, token, shots)


def test_an_operators_round_then_a_phone_and_200_percent_zoom(visit):
    """One test, so that the browser and melanged start once whatever the scheduler does."""
    an_operators_round_then_every_page_closed(visit)
    for width in (360, 640):
        readable_at(visit, width, 2)


def an_operators_round_then_every_page_closed(visit: Round) -> None:
    driver = visit.driver
    visit.go("/ui/blocks/1")
    visit.wait(seen.url_contains("/ui/login"))  # no page without signing in
    assert visit.h1() == "Sign in"
    visit.shot("01-sign-in")
    visit.sign_in()
    assert visit.h1() == "Networks" and driver.find_elements(By.TAG_NAME, "script") == []
    visit.shot("02-networks")

    visit.click("prod")
    assert visit.h1() == "Network prod"
    shown = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "table.blocks .pct")]
    percents = [float(text.rstrip("%")) for text in shown]
    assert len(percents) == 2 and percents == sorted(percents, reverse=True)  # worst first
    visit.shot("03-network")

    visit.click("10.20.0.0/24")
    assert visit.h1().startswith("Block 10.20.0.0/24")
    cells = driver.find_elements(By.CSS_SELECTOR, "ol.grid .cell")
    assert len(cells) == 256
    by_address = {cell.get_attribute("title").split(":")[0]: cell for cell in cells}
    mine = by_address["10.20.0.5"]
    assert "allocated" in mine.get_attribute("class")
    assert MAC in mine.get_attribute("title") and "db-1" in mine.get_attribute("title")
    assert "held" in by_address["10.20.0.3"].get_attribute("class")
    assert "unusable" in by_address["10.20.0.1"].get_attribute("class")  # the gateway
    assert "free" in by_address["10.20.0.9"].get_attribute("class")
    assert "option:router,10.20.0.1" in driver.find_element(By.CSS_SELECTOR, "pre.opts").text
    visit.shot("04-block-map")

    visit.go("/ui/block?ref=pool")
    groups = driver.find_elements(By.CSS_SELECTOR, "ol.grid .cell.group")
    assert len(groups) == 256 and "255 allocated" in groups[0].get_attribute("title")
    visit.shot("05-big-block")
    groups[1].click()
    visit.wait(seen.url_contains("cell="))
    assert "Map of 10.21.1.0/24" in driver.page_source
    assert len(driver.find_elements(By.CSS_SELECTOR, "ol.grid .cell.allocated")) == 256
    visit.shot("06-one-24")

    search = driver.find_element(By.ID, "q")
    search.send_keys(MAC)
    search.submit()
    visit.wait(seen.url_contains("/ui/addresses/10.20.0.5"))
    assert visit.h1() == "Address 10.20.0.5" and "db-1" in driver.page_source
    visit.shot("07-found-by-mac")

    visit.click("History")
    assert visit.h1() == "History"
    commands = [
        td.text for td in driver.find_elements(By.CSS_SELECTOR, "table.history td:nth-child(4)")
    ]
    assert "block.allocate" in commands and "ip.release" in commands
    visit.shot("08-history")

    driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
    visit.wait(seen.url_contains("/ui/login"))
    visit.shot("09-signed-out")
    for page in visit.visited[1:-1]:
        driver.get(page)
        assert driver.current_url.endswith("/ui/login"), page
        assert visit.h1() == "Sign in"


def readable_at(visit: Round, width: int, scale: int) -> None:
    """A phone (360 CSS px) and a 1280 px screen at 200% zoom (640 CSS px at scale 2)."""
    driver = visit.driver
    visit.sign_in()
    metrics = {"width": width, "height": 800, "deviceScaleFactor": scale, "mobile": width < 400}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        for path in ("/ui/", "/ui/blocks/1", "/ui/addresses", "/ui/history", "/ui/report"):
            visit.go(path)
            assert driver.execute_script(OVERFLOW_JS) <= 0, path
            assert driver.execute_script(CONTRAST_JS) == [], path
            assert driver.find_element(By.ID, "q").is_displayed()
            assert driver.find_element(By.CSS_SELECTOR, "form.signout button").is_displayed()
        visit.go("/ui/blocks/1")
        visit.shot(f"block-{width}px")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
        visit.wait(seen.url_contains("/ui/login"))
