"""The HTML alert report in a real browser: headless Chromium through Selenium.

A report is read by a person, often offline: an artifact, a mail
attachment, a file on a share. Checking the HTML as text cannot tell whether
a browser decodes the embedded PNG plots, lays them out at a readable size,
shows the alerts in the document's order with their severity badges, or
fetches anything when the page opens. So the reports here come from a real
workspace (two tiny models, an injected incident per model, score runs and
report runs as the flows do them) and are opened from ``file://`` URIs in
Debian's ``chromium`` driven by ``chromium-driver``. Every request the page
makes is read from Chromium's own network log. A full-page screenshot of
each report is checked for painted plots and, when ``ANOMALY_SCREENSHOT_DIR``
is set, kept there for a person to look at after CI.

Chromium and its driver are Debian packages (``apt-get install chromium
chromium-driver``, done by ``.ci/run``): their absence fails, never skips.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from anomaly.ops.jobs import plan_groups, score_groups, train_group
from anomaly.ops.workspace import STORE
from anomaly.ops.reports import Report, write_report
from anomaly.io.store import RawStore
from anomaly.evaluation.synthetic import clean_metrics, inject
from tests.conftest import TINY, long_points

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
INSTALL = "sudo apt-get install chromium chromium-driver"
WIDTH = 1200
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: The colour of the metric's line in every event plot (anomaly.ops.plotting.VALUE, #0072B2).
LINE_BLUE = np.array([0x00, 0x72, 0xB2]) / 255
#: The expected range shaded around the reconstruction (plotting.BAND #56B4E9 at alpha 0.3, over white).
BAND_FILL = 1 - 0.3 * (1 - np.array([0x56, 0xB4, 0xE9]) / 255)
#: Reports with plots (new or ongoing alerts) and quiet ones (nothing new, nothing open).
BUSY, QUIET = ("first", "busy"), ("resolved", "empty")
SHOWN = ("new", "ongoing")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """Four reports of one workspace, each written after a score run, as the flows do.

    Three days of requests, cpu and latency_ms train two tiny models: one for
    requests and cpu together (a multi-metric group, so alerts carry the
    metrics' contributions) and one for latency_ms. Then:

    - ``first``: the next 4.7 h, with a level shift on requests: new alerts;
    - ``busy``: 2.5 h more, with a latency spike: the requests alert ongoing
      and the latency one new;
    - ``resolved``: 12.5 h more, past both incidents: both resolved, nothing new;
    - ``empty``: a report with no score run since the last: nothing at all.
    """
    root = tmp_path_factory.mktemp("report-browser")
    workspace, registry = root / "ws", root / "models"
    series = clean_metrics(1440, metrics=("requests", "cpu", "latency_ms"), seed=11)
    broken, _ = inject(series, "level_shift", "requests", 900, 60, magnitude=3.0, seed=1)
    broken, _ = inject(broken, "spike", "latency_ms", 935, 12, magnitude=2.0, seed=1)
    store = RawStore(workspace / STORE)
    store.append(long_points(series.iloc[:864]))
    groups = plan_groups(["requests", "cpu", "latency_ms"], {"both": ["requests", "cpu"]})
    for group in groups:
        train_group(group, workspace, registry, TINY, history="3D", validation="12h")
    written = {}
    for name, (start, end) in zip(("first", "busy", "resolved"), ((864, 920), (920, 950), (950, 1100))):
        store.append(long_points(broken.iloc[start:end]))
        assert all(r["status"] == "scored" for r in score_groups(groups, workspace, registry)), name
        written[name] = write_report(workspace, now=broken.index[end - 1] + pd.Timedelta("2min"))
    written["empty"] = write_report(workspace, now=broken.index[1099] + pd.Timedelta("7min"))

    def shown(name: str, state: str) -> list[dict[str, Any]]:
        return [a for a in written[name].document["alerts"] if a["state"] == state]

    # what the tests below rely on, said plainly should the tiny models ever see it differently
    assert shown("first", "new") and not shown("first", "ongoing"), written["first"].markdown
    assert any(a["contributions"] for a in shown("first", "new")), written["first"].markdown
    assert shown("busy", "new") and shown("busy", "ongoing"), written["busy"].markdown
    assert shown("resolved", "resolved") and not any(shown("resolved", s) for s in SHOWN), written["resolved"].markdown
    assert written["empty"].document["alerts"] == [], written["empty"].markdown
    assert len({r.paths["html"] for r in written.values()}) == 4
    return written


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module (it takes seconds to start on 2 cores), with its network log on."""
    missing = [f"{path} (Debian package {package})" for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the report browser tests need a real Chromium; "
            f"install the Debian packages: {INSTALL}",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        f"--window-size={WIDTH},900",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # Chromium's DevTools network events
    try:
        # a driver path given to the Service: Selenium Manager is not run, nothing is downloaded
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    except WebDriverException as err:
        pytest.fail(f"Chromium ({CHROMIUM}) with {CHROMEDRIVER} did not start: {err.msg}", pytrace=False)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, path: Path) -> list[str]:
    """Load ``path`` from its ``file://`` URI; return the URL of every request the page made, its own included."""
    uri = path.resolve().as_uri()
    driver.get_log("performance")  # drop what came before
    driver.get(uri)
    assert driver.execute_script("return document.readyState") == "complete"
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent" and message["params"].get("documentURL") == uri:
            requests.append(message["params"]["request"]["url"])
    assert uri in requests, f"the network log did not see the page itself load: {requests!r}"
    return requests


def fetched(requests: list[str], path: Path) -> list[str]:
    """The requests that left the page: anything but the page itself and ``data:`` URLs."""
    return [url for url in requests if url != path.resolve().as_uri() and not url.startswith("data:")]


def shown_alerts(report: Report) -> list[dict[str, Any]]:
    """The alerts the HTML gives a section each (new, then ongoing), in the document's order."""
    return [a for a in report.document["alerts"] if a["state"] in SHOWN]


def expected_headline(doc: dict[str, Any]) -> str:
    new = doc["counts"]["new"]
    total = sum(new.values())
    by_severity = f" ({', '.join(f'{n} {level}' for level, n in new.items())})" if total else ""
    ongoing, resolved = sum(doc["counts"]["ongoing"].values()), sum(doc["counts"]["resolved"].values())
    return f"{total} new alert{'' if total == 1 else 's'}{by_severity} · {ongoing} ongoing · {resolved} resolved"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- what the page says -----------------------------------------------------------------------


@pytest.mark.parametrize("name", BUSY + QUIET)
def test_title_and_headline_match_the_json_document(browser: Any, reports: dict[str, Report], name: str) -> None:
    from selenium.webdriver.common.by import By

    report = reports[name]
    doc = report.document
    open_page(browser, report.paths["html"])
    generated = pd.Timestamp(doc["generated_at"]).tz_convert("UTC")
    assert browser.title == f"Anomaly report — {generated:%Y-%m-%d %H:%M} UTC"
    headline = browser.find_element(By.ID, "headline")
    assert headline.is_displayed() and headline.text == expected_headline(doc)
    assert headline.text.startswith(f"{len(report.new_alerts)} new alert")
    summary = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#summary > li")]
    if doc["period"]["from"]:
        assert summary[0].startswith("covered ") and f"{doc['period']['points']} point(s)" in summary[0]
    else:
        assert summary == [f"no points scored since the last report ({doc['period']['score_runs']} score run(s))"]


@pytest.mark.parametrize("name", BUSY)
def test_one_section_per_new_and_ongoing_alert_in_the_documents_order(browser: Any, reports: dict[str, Report], name: str) -> None:
    from selenium.webdriver.common.by import By

    report = reports[name]
    open_page(browser, report.paths["html"])
    alerts = shown_alerts(report)
    sections = browser.find_elements(By.CSS_SELECTOR, "div.alert")
    assert [s.get_attribute("id") for s in sections] == [f"alert-{a['id']}" for a in alerts]
    assert browser.find_elements(By.ID, "quiet") == []
    for section, alert in zip(sections, alerts):
        heading = section.find_element(By.TAG_NAME, "h3")
        badge = heading.find_element(By.CSS_SELECTOR, "span.sev")
        assert badge.get_attribute("class").split() == ["sev", f"sev-{alert['severity']}"]
        assert badge.text == alert["severity"].upper()  # the CSS's text-transform applied
        assert badge.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent"), alert["severity"]
        assert heading.text.endswith(", ".join(alert["metrics"]))
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in section.find_elements(By.CSS_SELECTOR, "table.contributions tr")][1:]
        assert rows == [[c["metric"], f"{c['share'] * 100:.0f}%"] for c in alert["contributions"]]
    # new alerts sit under "New alerts", ongoing ones under "Ongoing", one below the other
    tops = {a["id"]: s.rect["y"] for s, a in zip(sections, alerts)}
    new_top = browser.find_element(By.ID, "new").rect["y"]
    ongoing = [a["id"] for a in alerts if a["state"] == "ongoing"]
    if ongoing:
        ongoing_top = browser.find_element(By.ID, "ongoing").rect["y"]
        assert all(new_top < tops[a["id"]] < ongoing_top for a in alerts if a["state"] == "new")
        assert all(tops[key] > ongoing_top for key in ongoing)
    else:
        assert browser.find_elements(By.ID, "ongoing") == []
    assert list(tops.values()) == sorted(tops.values())


@pytest.mark.parametrize("name", BUSY)
def test_every_plot_is_decoded_and_drawn_at_a_readable_size(browser: Any, reports: dict[str, Report], name: str) -> None:
    from selenium.webdriver.common.by import By

    report = reports[name]
    open_page(browser, report.paths["html"])
    alerts = shown_alerts(report)
    plots = browser.find_elements(By.CSS_SELECTOR, "img.plot")
    assert len(plots) == len(alerts) >= 1
    for plot, alert in zip(plots, alerts):
        state = browser.execute_script(
            "const i = arguments[0], r = i.getBoundingClientRect(), box = i.closest('div.alert').getBoundingClientRect();"
            "return {complete: i.complete, nw: i.naturalWidth, nh: i.naturalHeight, w: r.width, h: r.height,"
            " left: r.left, right: r.right, boxLeft: box.left, boxRight: box.right, section: i.closest('div.alert').id};",
            plot,
        )
        assert state["complete"] and state["nw"] > 0 and state["nh"] > 0, f"plot of alert {alert['id']} did not decode: {state}"
        assert state["section"] == f"alert-{alert['id']}"
        src = plot.get_attribute("src")
        assert src.startswith("data:image/png;base64,")
        assert png_size(base64.b64decode(src.split(",", 1)[1])) == (state["nw"], state["nh"])
        assert state["w"] > 300 and state["h"] > 150, state
        assert abs(state["w"] / state["h"] - state["nw"] / state["nh"]) < 0.02, state  # not stretched
        assert state["boxLeft"] <= state["left"] and state["right"] <= state["boxRight"], state  # inside its section


@pytest.mark.parametrize("name", BUSY + QUIET)
def test_the_page_fetches_nothing(browser: Any, reports: dict[str, Report], name: str) -> None:
    path = reports[name].paths["html"]
    requests = open_page(browser, path)
    assert fetched(requests, path) == []
    # the plots came from the page itself, and the network log saw them do so
    assert sum(url.startswith("data:image/png;base64,") for url in requests) == len(shown_alerts(reports[name]))
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(url.startswith("data:") for url in resources), resources


def test_a_fetch_would_be_seen(browser: Any, reports: dict[str, Report], tmp_path: Path) -> None:
    """The check above is no formality: a page that loads a remote image or a local stylesheet is caught."""
    page = tmp_path / "tampered.html"
    html = reports["busy"].paths["html"].read_text(encoding="utf-8")
    extra = f'<img src="http://127.0.0.1:9/pixel.png"><link rel="stylesheet" href="{(tmp_path / "style.css").as_uri()}">'
    page.write_text(html.replace("</body>", extra + "</body>"), encoding="utf-8")
    (tmp_path / "style.css").write_text("body { color: black; }\n", encoding="utf-8")
    assert sorted(fetched(open_page(browser, page), page)) == sorted(["http://127.0.0.1:9/pixel.png", (tmp_path / "style.css").as_uri()])


@pytest.mark.parametrize("name", QUIET)
def test_a_quiet_report_says_so_and_draws_nothing(browser: Any, reports: dict[str, Report], name: str) -> None:
    from selenium.webdriver.common.by import By

    report = reports[name]
    open_page(browser, report.paths["html"])
    quiet = browser.find_element(By.ID, "quiet")
    assert quiet.is_displayed() and quiet.text == "No new anomalies."
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.find_elements(By.CSS_SELECTOR, "div.alert") == []
    assert browser.find_elements(By.ID, "ongoing") == []
    resolved = [a for a in report.document["alerts"] if a["state"] == "resolved"]
    rows = browser.find_elements(By.CSS_SELECTOR, "h2#resolved + table tr")[1:]
    assert [[td.text for td in row.find_elements(By.TAG_NAME, "td")][:2] for row in rows] == [
        [a["severity"].upper(), ", ".join(a["metrics"])] for a in resolved
    ]
    assert bool(browser.find_elements(By.ID, "resolved")) == bool(resolved)


# -- what the page looks like -----------------------------------------------------------------


@pytest.mark.parametrize("name", BUSY + QUIET)
def test_a_full_page_screenshot_shows_the_plots(browser: Any, reports: dict[str, Report], name: str, tmp_path: Path) -> None:
    from matplotlib.image import imread
    from selenium.webdriver.common.by import By

    report = reports[name]
    open_page(browser, report.paths["html"])
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    shot = tmp_path / f"report-{name}.png"
    try:
        chrome = browser.execute_script("return window.outerHeight - window.innerHeight")  # the window's frame, if any
        browser.set_window_size(WIDTH, height + chrome)
        viewport = browser.execute_script("return [window.innerWidth, window.innerHeight, window.scrollY, devicePixelRatio]")
        assert viewport == [WIDTH, height, 0, 1], "the window does not show the whole page"
        boxes = [plot.rect for plot in browser.find_elements(By.CSS_SELECTOR, "img.plot")]
        quiet = browser.find_elements(By.ID, "quiet")
        quiet_box = quiet[0].rect if quiet else None
        assert browser.save_screenshot(str(shot))
    finally:
        browser.set_window_size(WIDTH, 900)
    if os.environ.get("ANOMALY_SCREENSHOT_DIR"):
        keep = Path(os.environ["ANOMALY_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep / f"report-browser-{name}.png")

    assert shot.read_bytes()[:8] == PNG_MAGIC
    pixels = imread(shot)[:, :, :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (height, WIDTH)
    assert pixels.std() > 0.01, "the screenshot is blank"
    ink = (pixels < 0.9).any(axis=2)
    assert ink.mean() > 0.005, "almost nothing is drawn"
    assert len(boxes) == len(shown_alerts(report))
    for box in boxes:
        top, left = int(box["y"]), int(box["x"])
        region = pixels[top : top + int(box["height"]), left : left + int(box["width"])]
        assert (region < 0.9).any(axis=2).mean() > 0.02, f"the plot at {box} is not painted"
        blue = np.linalg.norm(region - LINE_BLUE, axis=2) < 0.25
        assert blue.sum() > 200, f"no metric line (#0072B2) in the plot at {box}"
        band = np.linalg.norm(region - BAND_FILL, axis=2) < 0.03
        assert band.sum() > 500, f"no expected range (#56B4E9, shaded) around the reconstruction in the plot at {box}"
    if quiet_box is not None:
        green = pixels[int(quiet_box["y"]) : int(quiet_box["y"] + quiet_box["height"]), : WIDTH // 2]
        assert ((green[:, :, 1] > green[:, :, 0] + 0.1) & (green[:, :, 1] < 0.6)).any(), "'No new anomalies.' is not shown in green"
