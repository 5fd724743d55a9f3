"""The review page in a real headless browser (Debian's chromium + chromedriver through Selenium):
a real daemon's rejects with their heatmaps; an operator marks one a good part; the label row and
the copy in the retraining folder are there. And the token rule, over plain HTTP."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.config import load_config
from daemon.db.models import Inspection, Label
from daemon.run.service import Daemon
from tests.conftest import daemon_running, make_config, rows_of, wait_until, write_image

TOKEN = "0123456789abcdef-review"


def binary(*names: str) -> str:
    for name in names:
        if found := shutil.which(name) or (
            Path("/usr/bin") / name if (Path("/usr/bin") / name).exists() else None
        ):
            return str(found)
    if os.environ.get("CI"):  # .ci/run installs them: missing there means the install broke
        pytest.fail(f"{names[0]} is missing although .ci/run installs it")
    pytest.skip(f"{names[0]} is not installed here (.ci/run installs chromium and chromium-driver)")


@pytest.fixture
def daemon_with_rejects(tmp_path: Path, tiny_model: Path) -> Iterator[Daemon]:
    config = make_config(
        tmp_path, tiny_model, model__threshold=0.0, metrics__port=0, metrics__host="127.0.0.1"
    )
    with daemon_running(load_config(config)) as daemon:
        for i in range(3):
            write_image(tmp_path / "inbox" / f"part{i}.png", seed=i, size=96)
        wait_until(lambda: all_filed_with_overlays(rows_of(daemon), 3), 120)
        yield daemon


def all_filed_with_overlays(rows: list[Inspection], count: int) -> bool:
    return len(rows) == count and all(r.heatmap_path and r.moved_at for r in rows)


@pytest.mark.timeout(600)
def test_an_operator_relabels_a_reject_in_a_real_browser(daemon_with_rejects: Daemon, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    daemon = daemon_with_rejects
    assert daemon.metrics_server is not None
    options = webdriver.ChromeOptions()
    options.binary_location = binary("chromium", "chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(binary("chromedriver")), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"{daemon.metrics_server.url}/review")
        assert "inspectd review" in driver.title
        target = rows_of(daemon)[0]
        row = driver.find_element(By.ID, f"row-{target.id}")
        assert "rejected" in row.text and target.filename in row.text
        images = row.find_elements(By.TAG_NAME, "img")
        assert [i.get_attribute("alt") for i in images] == [f"capture {target.id}", f"heatmap {target.id}"]
        assert all(driver.execute_script("return arguments[0].naturalWidth", i) == 96 for i in images)
        shots = Path(os.environ.get("INSPECTD_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / "review-before.png"))
        row.find_element(By.NAME, "by").send_keys("Dana")
        row.find_element(By.ID, f"good-{target.id}").click()
        # The click submits a form; the page it leads to may not be loaded when click() returns.
        done = WebDriverWait(driver, 15).until(
            expected_conditions.presence_of_element_located((By.ID, "done"))
        )
        assert f"label saved for inspection {target.id}" in done.text
        assert "marked good part by Dana" in driver.find_element(By.ID, f"row-{target.id}").text
        driver.save_screenshot(str(shots / "review-after.png"))
    finally:
        driver.quit()
    with daemon.store.session() as session:
        labels = list(session.scalars(select(Label)))
    assert [(x.inspection_id, x.label, x.labelled_by) for x in labels] == [(target.id, "good", "Dana")]
    copied = Path(labels[0].copied_to or "")
    assert copied == tmp_path / "retraining" / "good" / f"{target.id}-{target.filename}"
    assert copied.read_bytes() == Path(target.final_path).read_bytes()  # train --normal takes this folder


@pytest.mark.timeout(300)
def test_with_a_token_every_request_must_carry_it(tmp_path: Path, tiny_model: Path) -> None:
    config = make_config(
        tmp_path, tiny_model, metrics__port=0, metrics__host="127.0.0.1", metrics__token=TOKEN
    )
    daemon = Daemon.start(load_config(config))
    try:
        assert daemon.metrics_server is not None
        url = f"{daemon.metrics_server.url}/review"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 403
        with urllib.request.urlopen(f"{url}?token={TOKEN}", timeout=10) as page:
            assert page.status == 200 and b"nothing to review" in page.read()
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as page:
            assert page.status == 200
        with urllib.request.urlopen(f"{daemon.metrics_server.url}/metrics", timeout=10) as metrics:
            assert b"inspectd_drift_alarm" in metrics.read()  # /metrics stays open for Prometheus
    finally:
        daemon.close()
