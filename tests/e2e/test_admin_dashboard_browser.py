"""The /admin dashboard in headless Chromium (Selenium) against a live stack with data.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make chromium``, which ``make pytest``
runs). The screenshot is kept as a test artifact in ``.dev/artifacts/admin-dashboard.png``.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests

from services.admin.heartbeats import KEY_PREFIX
from services.auth.keys import SqlKeyStore
from services.clock import utcnow
from services.db import make_engine
from tests.conftest import auth
from tests.e2e.conftest import REPO, start_worker
from tests.helpers import chat_body
from tests.services.admin.jobrows import add_job
from tests.support.images import make_image

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACT = REPO / ".dev" / "artifacts" / "admin-dashboard.png"


def _require_chromium() -> None:
    """Skip before the test touches the shared admin stack: jobs it queued and left behind
    would be counted by the admin test that shares the stack."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        reason = "chromium/chromium-driver not installed"
        if shutil.which("apt-get") is None:
            reason += " and no apt-get here to install them (make chromium)"
        pytest.skip(reason)


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1400", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_e2e_admin_dashboard_renders_chart_workers_and_failures(
    admin_api, admin_env, admin_keys, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _require_chromium()
    user, admin = admin_keys
    engine = make_engine(admin_env["LOUPE_DATABASE_URL"])
    try:
        owner = SqlKeyStore(engine).authenticate(user).id
        now = utcnow()
        add_job(engine, owner, created=now - timedelta(seconds=5), status="failed",
                started=now - timedelta(seconds=4), completed=now - timedelta(seconds=1),
                error_code="engine_error", error_message="The model rejected the image.")  # fmt: skip
    finally:
        engine.dispose()
    for _ in range(12):
        response = requests.post(
            f"{admin_api}/v1/jobs", json=chat_body(make_image(), max_tokens=4),
            headers=auth(user), timeout=60,
        )  # fmt: skip
        assert response.status_code == 202, response.text

    driver = _browser()
    worker = None
    try:
        driver.get(f"{admin_api}/admin")
        driver.find_element(By.ID, "admin-key").send_keys(admin)
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait = WebDriverWait(driver, 120, poll_frequency=0.25)

        def points(d):
            return int(d.find_element(By.ID, "depth-chart").get_attribute("data-points") or 0)

        # Two polls with the jobs waiting, then a worker drains them while the page watches.
        wait.until(lambda d: points(d) >= 2)
        assert "12" in driver.find_element(By.ID, "queues-table").text
        worker = start_worker(admin_env, tmp_path / "worker.log", "admin-browser")
        wait.until(lambda d: f":{worker.pid}" in d.find_element(By.ID, "workers-table").text)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#cards .value").text == "0")
        seen = points(driver)
        wait.until(lambda d: points(d) >= seen + 1)
        line = driver.find_element(By.CSS_SELECTOR, "#depth-chart polyline.series")
        assert line.get_attribute("data-queue") == "inference"
        assert "The model rejected the image." in driver.find_element(By.ID, "failures-table").text
        assert "15m" in driver.find_element(By.ID, "throughput-table").text
        assert "admin_required" not in driver.find_element(By.ID, "status").text
        assert driver.execute_script("return sessionStorage.getItem('loupe.adminKey')") == admin
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACT))
        print(f"dashboard screenshot: {ARTIFACT}")
        assert ARTIFACT.stat().st_size > 10_000
    finally:
        driver.quit()
        if worker is not None:
            worker.stop()  # SIGTERM: a clean shutdown

    # A clean shutdown deletes the heartbeat at once (no waiting for the TTL).
    assert worker is not None
    client = redis.Redis.from_url(admin_env["LOUPE_BROKER_URL"])
    try:
        assert worker.returncode is not None
        assert list(client.scan_iter(match=KEY_PREFIX + "*")) == []
    finally:
        client.close()
