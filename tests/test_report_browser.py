"""report.html in a real browser: Debian's headless Chromium, driven by Playwright.

No browser is downloaded: Playwright launches the system's /usr/bin/chromium (`.ci/run`
installs Debian's package where it is missing). Where there is none, the tests skip,
except under CI, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_PROFILE
from corpus import HostileCorpus

from toolkit.demo import write_demo_data
from toolkit.profiles import load_profile
from toolkit.report.html import write_report_html
from toolkit.scan import ScanOptions, scan_folder
from toolkit.validate import validate_manifest
from validations.rules import REGISTRY, QualityRule

#: The rules whose report gallery opens with a chart of their scores.
QUALITY_RULES = {name for name, cls in REGISTRY.items() if issubclass(cls, QualityRule)}
#: Headless, and nothing that talks to the network or needs a GPU or a sandbox (CI runs as
#: root in a container).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def find_chromium() -> str | None:
    """Debian's chromium (or $TOOLKIT_CHROMIUM), or None."""
    return os.environ.get("TOOLKIT_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium, or skip (fail under CI) saying how to get one."""
    executable = find_chromium()
    if executable is None:
        why = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; .ci/run installs it before the tests")
        pytest.skip(why)
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_report(browser: Any, report: Path) -> tuple[Any, dict[str, list[str]]]:
    """Load report.html from disk; the page and what it said (console, errors, requests)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    said: dict[str, list[str]] = {"console": [], "errors": [], "dialogs": [], "requests": []}
    page.on("console", lambda m: said["console"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: said["errors"].append(str(e)))
    page.on("dialog", lambda d: (said["dialogs"].append(d.message), d.dismiss()))
    page.on("request", lambda r: said["requests"].append(r.url))
    page.goto(report.resolve().as_uri(), wait_until="load")
    return page, said


def drawn(page: Any, selector: str) -> list[dict[str, Any]]:
    """For each image matching `selector`: whether it decoded, and its size on the page."""
    return page.eval_on_selector_all(
        selector,
        """imgs => imgs.map(i => {
            const box = i.getBoundingClientRect();
            return {id: i.id, complete: i.complete, natural: i.naturalWidth,
                    width: box.width, height: box.height};
        })""",
    )


def test_hostile_report_loads_clean_with_charts_and_thumbnails_drawn(
    browser: Any, hostile: HostileCorpus, tmp_path: Path
) -> None:
    profile = tmp_path / "faces.toml"
    profile.write_text(TINY_PROFILE.replace('severity = "off"', 'severity = "warning"'))
    manifest = scan_folder(hostile.root, jobs=1, options=ScanOptions(detect_faces=True))
    result = validate_manifest(manifest, load_profile(profile))
    report = write_report_html(result, result.to_report(), tmp_path / "run")
    page, said = open_report(browser, report)
    assert said["console"] == [] and said["errors"] == [] and said["dialogs"] == []
    assert all(url.startswith("data:") or url == report.resolve().as_uri()
               for url in said["requests"]), said["requests"]  # fmt: skip
    charts = drawn(page, "img.chart")
    # the dataset's three charts, and one score chart per image-quality rule that flagged files
    scored = {f"chart-{f.rule}" for f in result.findings if f.rule in QUALITY_RULES}
    assert scored  # the hostile corpus holds flat and grey pictures
    assert {c["id"] for c in charts} == {
        "chart-classes",
        "chart-file-sizes",
        "chart-dimensions",
    } | scored
    for chart in charts:
        assert chart["complete"] and chart["natural"] > 200 and chart["width"] > 200, chart
    thumbs = drawn(page, "img.thumb")
    assert thumbs and all(t["complete"] and t["natural"] > 0 and t["height"] > 0 for t in thumbs)
    name = page.get_by_text("sad/<img src=x onerror=alert(1)>.jpg", exact=True)
    assert name.count() >= 1  # the file name is text on the page, not an element
    assert page.locator("img[onerror]").count() == 0
    page.close()


def test_demo_report_loads_clean(browser: Any, tmp_path: Path) -> None:
    demo = write_demo_data(tmp_path / "demo", n_per_class=12)
    manifest = scan_folder(demo.root, jobs=1, options=ScanOptions(detect_faces=True))
    result = validate_manifest(manifest, load_profile("tutorial"))
    report = write_report_html(result, result.to_report(), tmp_path / "run")
    page, said = open_report(browser, report)
    assert said["console"] == [] and said["errors"] == []
    assert all(c["natural"] > 0 for c in drawn(page, "img.chart"))
    assert page.locator("#verdict").inner_text().startswith(("PASSED", "FAILED"))
    page.close()
