"""The report and its explorer in a real browser: headless Chromium at 1280 px, driven by Selenium."""
import re
import time

import pandas as pd
import pytest

from helpers.browser import CUT, browser, click_point, console_errors, missing
from helpers.commands import run_cli
from helpers.configs import tiny_universe_overrides

# slow: a sweep, its report and a browser (about 25 s of CPU); CI runs them after the default suite
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing() is not None, reason=f"no browser: {missing()}")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """A two-lr sweep with its report and explorer."""
    tmp = tmp_path_factory.mktemp("browser")
    code, output = run_cli("-m", "lr=1e-5,3e-5", "sample_size=6", "max_steps=30", "progress=false",
                           f"hydra.sweep.dir={tmp / 'sweep'}", *tiny_universe_overrides(cache_dir), cwd=tmp)
    assert code == 0, output[-2000:]
    return tmp / "sweep"


@pytest.fixture(scope="module")
def driver():
    chromium = browser()
    yield chromium
    chromium.quit()


def open_page(driver, path, ready: str = "return document.readyState === 'complete'"):
    driver.get(path.as_uri())
    deadline = time.time() + 30
    while not driver.execute_script(ready):
        assert time.time() < deadline, f"{path} did not load"
        time.sleep(0.1)


def test_the_report_loads_cleanly_and_nothing_is_cut_at_1280_px(driver, sweep):
    open_page(driver, sweep / "report.html")
    assert console_errors(driver) == []
    assert driver.execute_script(CUT) == []  # every table fits or scrolls in its own box
    assert driver.execute_script("return document.querySelectorAll('.table-box > table').length") > 5
    assert "explorer.html" in driver.find_element("tag name", "body").text


EXPLORER_READY = "const p = document.getElementById('explorer-plot'); return !!(p && p._fullLayout && p.data)"


def test_the_explorer_has_every_example_and_a_click_shows_it(driver, sweep):
    merged = pd.read_csv(sweep / "merged.csv")
    measured = merged[merged["status"].isin(["correct", "never_correct"])]
    open_page(driver, sweep / "explorer.html", EXPLORER_READY)
    assert console_errors(driver) == []
    traces = driver.execute_script("return document.getElementById('explorer-plot').data.map(t => t.x.length)")
    assert sum(traces) == len(measured) and len(traces) == measured["run"].nunique()
    symbols = driver.execute_script("return document.getElementById('explorer-plot').data"
                                    ".map(t => t.marker.symbol)")
    for trace, (_, rows) in zip(symbols, measured.groupby("run", sort=False), strict=True):
        assert trace == ["circle" if s == "correct" else "triangle-up-open" for s in rows["status"]]  # lower bounds
    # the costliest corrected mistake: a real click on its point shows its image and its loss sum
    corrected = measured[measured["status"] == "correct"]
    costliest = corrected.loc[corrected["loss_sum"].idxmax()]
    runs = list(dict.fromkeys(measured["run"]))
    rows = measured[measured["run"] == costliest["run"]].reset_index(drop=True)
    click_point(driver, "explorer-plot", runs.index(costliest["run"]),
                int(rows.index[rows["path"] == costliest["path"]][0]))
    text = driver.find_element("id", "details-text").text
    assert costliest["run"] in text and f"loss sum: {costliest['loss_sum']:.6g}" in text, text
    assert f"rank: {int(costliest['universal_difficulty_rank'])}" in text
    assert f"steps: {int(costliest['steps_to_correct'])}" in text and "status: correct" in text
    image = driver.find_element("id", "details-image")
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
    assert driver.execute_script(CUT) == []


def test_the_explorer_shows_any_two_scores(driver, sweep):
    from selenium.webdriver.support.ui import Select
    merged = pd.read_csv(sweep / "merged.csv")
    measured = merged[merged["status"].isin(["correct", "never_correct"])]
    open_page(driver, sweep / "explorer.html", EXPLORER_READY)
    Select(driver.find_element("id", "y-axis")).select_by_value("initial_loss")
    Select(driver.find_element("id", "x-axis")).select_by_value("drawdown")
    first = measured[measured["run"] == measured["run"].iloc[0]]
    shown = driver.execute_script("const t = document.getElementById('explorer-plot').data[0]; return [t.x, t.y]")
    assert shown[0] == pytest.approx(list(first["drawdown"])) and shown[1] == pytest.approx(list(first["initial_loss"]))
    title = driver.execute_script("return document.getElementById('explorer-plot')._fullLayout.yaxis.title.text")
    assert re.search("initial loss", title)


@pytest.fixture(scope="module")
def html_named_runs(tmp_path_factory, cache_dir):
    """Two runs with equal values in directories named as HTML that would run script, aggregated together
    (equal values: each labelled by its directory's name)."""
    import shutil

    from omegaconf import OmegaConf

    from analysis.aggregate import aggregate
    from helpers.configs import compose_config
    from sweep.run.job import run
    tmp = tmp_path_factory.mktemp("html_named")
    first, second = tmp / "<img src=x onerror=alert(1)>", tmp / "<img src=x onerror=alert(2)>"
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=4", "max_steps=20", "lr=3e-5",
                         "progress=false")
    run(cfg, first)
    (first / ".hydra").mkdir()
    OmegaConf.save(cfg, first / ".hydra" / "config.yaml")
    shutil.copytree(first, second)
    aggregate([first, second], tmp / "out")
    return tmp / "out"


def test_a_run_named_as_html_shows_as_text_and_runs_nothing(driver, html_named_runs):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from helpers.browser import POINT
    open_page(driver, html_named_runs / "explorer.html", EXPLORER_READY)
    assert console_errors(driver) == []
    images = driver.execute_script("return document.querySelectorAll('img').length")
    legend = driver.execute_script("return [...document.querySelectorAll('.legendtext')].map(e => e.textContent)")
    labels = [f"model=test_resnet, lr=3e-05 [<img src=x onerror=alert({n})>]" for n in (1, 2)]
    assert legend == labels, legend
    x, y, width, height = driver.execute_script(POINT, "explorer-plot", 1, 0)
    plot = driver.find_element(By.ID, "explorer-plot")
    ActionChains(driver).move_to_element_with_offset(plot, x - width / 2, y - height / 2).perform()  # a hover
    deadline = time.time() + 10
    while "onerror" not in driver.find_element("id", "details-text").text:
        assert time.time() < deadline, "hovering showed no details"
        time.sleep(0.1)
    text = driver.find_element("id", "details-text").text
    assert text.splitlines()[0] == labels[1], text  # the name, as text
    assert driver.execute_script("return document.querySelectorAll('img').length") == images  # no element made
    assert driver.execute_script("return document.querySelectorAll('#details-text img').length") == 0
    assert console_errors(driver) == []  # an alert would also have stopped this script
