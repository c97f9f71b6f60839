"""A real browser for the report's tests: Debian's headless Chromium driven by Selenium and its
chromedriver, at a laptop's width. `browser()` is None, with the reason, where either is missing."""
from __future__ import annotations

import shutil
import tempfile

WIDTH, HEIGHT = 1280, 1000
# as this machine's probe starts it: no sign-in, sync or background fetches (the network is closed)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--window-size={WIDTH},{HEIGHT}"]


def missing() -> str | None:
    """Why no browser can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-test.txt)"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian: apt-get install chromium chromium-driver; .ci/run does)"
    return None


def browser():
    """A headless Chromium at WIDTH x HEIGHT that keeps the page's console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='ltc-chromium-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def console_errors(driver) -> list[str]:
    """The page's console messages of level SEVERE so far."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


# Every table and figure of the page either fits its width or sits in a box of its own that scrolls
# sideways (overflow-x auto or scroll) and itself fits: the elements that do neither.
CUT = """
const width = document.documentElement.clientWidth;
const cut = [];
for (const element of document.querySelectorAll('table, img, svg, canvas, .plotly')) {
  const box = element.getBoundingClientRect();
  let scroller = element.parentElement;
  while (scroller && !['auto', 'scroll'].includes(getComputedStyle(scroller).overflowX)) {
    scroller = scroller.parentElement;
  }
  const inside = scroller && scroller.getBoundingClientRect().right <= width + 1;
  if (box.right > width + 1 && !inside) cut.push(element.tagName + ': ' + (element.innerText || element.alt || '')
    .slice(0, 60));
}
return cut;
"""


# The pixel position, relative to the plot's element, of point `i` of trace `t` (plotly's own axes).
POINT = """
const plot = document.getElementById(arguments[0]), t = arguments[1], i = arguments[2];
const layout = plot._fullLayout, trace = plot.data[t];
const box = plot.getBoundingClientRect();
return [layout.xaxis._offset + layout.xaxis.d2p(trace.x[i]), layout.yaxis._offset + layout.yaxis.d2p(trace.y[i]),
        box.width, box.height];
"""


def click_point(driver, plot_id: str, trace: int, index: int) -> None:
    """A real mouse click on a point of a plotly plot."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    x, y, width, height = driver.execute_script(POINT, plot_id, trace, index)
    element = driver.find_element(By.ID, plot_id)
    ActionChains(driver).move_to_element_with_offset(element, x - width / 2, y - height / 2).click().perform()
