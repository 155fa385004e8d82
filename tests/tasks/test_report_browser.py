"""The study report in a real browser (Debian's headless `chromium`): the page loads without a
console message (no policy violation, no error), its DOM holds every table and plot, a screenshot
shows the plots' colours, and the browser's network log has no request made by the page.

The browser is required, not optional: `make test` installs it (see the Makefile's `browser`
target), so a missing browser fails here with the command that installs it.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfound.tasks.study_report import render_report
from tests.tasks.study_fixtures import write_study

pytestmark = pytest.mark.slow
BROWSERS = ("chromium", "chromium-browser")
# Keep the browser's own background services quiet and every host unresolvable: the test must
# never depend on (or reach) the network, whatever the page does.
QUIET = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
)


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "the report's browser test needs Debian's chromium, which is not installed: run "
        "`sudo apt-get install -y chromium` (or `make browser`)",
        pytrace=False,
    )


def _run(page: Path, tmp: Path, *args: str) -> tuple[str, str, list[dict]]:
    """Open `page` once; returns stdout, the console lines of stderr, and the URL requests of
    the network log (url and the site they were made for)."""
    netlog = tmp / f"netlog-{len(list(tmp.glob('netlog-*')))}.json"
    command = [
        _browser(), *QUIET, f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr",
        "--v=0", f"--log-net-log={netlog}", *args, page.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, "\n".join(console), _requests(netlog)


def _requests(netlog: Path) -> list[dict]:
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        {"url": e["params"]["url"], "site": e["params"].get("site_for_cookies", "")}
        for e in log["events"]
        if e["type"] == start and "url" in e.get("params", {})
    ]


def _page_requests(requests: list[dict]) -> list[str]:
    """Requests made for a file:// page (the browser's own update and account pings have no
    such site) to anything but a file or data URL."""
    return [
        r["url"]
        for r in requests
        if "file://" in r["site"] and not r["url"].startswith(("file:", "data:"))
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    study = write_study(tmp_path_factory.mktemp("study"))
    return study, render_report(study.folder)


def test_the_network_check_sees_a_page_that_fetches(tmp_path):
    """The detector below is real: a page with a remote image is caught (the fetch fails at
    once: no host resolves)."""
    page = tmp_path / "fetching.html"
    page.write_text('<!DOCTYPE html><img src="http://example.invalid/x.png"><p>x</p>')
    _, _, requests = _run(page, tmp_path, "--dump-dom")
    assert _page_requests(requests) == ["http://example.invalid/x.png"]


def test_the_report_loads_with_every_table_and_plot(report, tmp_path):
    study, page = report
    dom, console, requests = _run(page, tmp_path, "--dump-dom")
    assert console == ""  # no policy violation, no error, nothing logged by the page
    assert _page_requests(requests) == []
    assert dom.count("<table") == 10  # data of 2 tasks, 5 metric tables, 2 comparisons, cells
    for caption in ("Data: brain", "Paired comparisons", "Label saving", "Every cell"):
        assert f"<caption>{caption}" in dom
    assert 'training subset at 50%</td><td class="num">12–14</td>' in dom
    for row in study.summary:
        assert f"{row['mean']:.3f} ± {row['sd']:.3f}" in dom
    images = re.findall(r'<img src="([^"]+)"', dom)
    assert len(images) == 8 and all(s.startswith("data:image/svg+xml;base64,") for s in images)
    assert not re.findall(r'(?:src|href)="(?!data:|#)', dom)


def test_a_screenshot_shows_the_plots(report, tmp_path):
    _, page = report
    shot = tmp_path / "report.png"
    _, console, requests = _run(page, tmp_path, f"--screenshot={shot}", "--window-size=1400,6000")
    assert console == "" and _page_requests(requests) == []
    with Image.open(shot) as image:
        rgb = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(np.int32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]  # one integer per colour: fast
    values, counts = np.unique(packed, return_counts=True)
    assert len(values) > 200  # text, tables, plots: far from a blank page
    assert 1 - counts[values == 0xFFFFFF].sum() / len(packed) > 0.03
    # the encoders' line colours and both ends of the heatmaps' viridis scale were painted
    # (nearly: scaled images blend a little), so the inline SVG plots were decoded and drawn
    unique = np.stack([values >> 16, (values >> 8) & 255, values & 255], axis=1)
    for colour in ("1f77b4", "d62728", "440154", "fde725"):
        target = np.array([int(colour[i : i + 2], 16) for i in (0, 2, 4)])
        near = np.abs(unique - target).max(axis=1) <= 8
        assert counts[near].sum() > 50, f"#{colour}"
