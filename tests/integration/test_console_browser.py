"""The web console in a real browser: headless Chromium from Debian driven through Selenium
(chromedriver) against a dispatcher, a database and an SMTP sink started by the test. The
page shows a failed message inserted by the test with its SMTP reply, renders a hostile
subject and relay text as text (no script runs, no element is injected, the CSP blocks
nothing of the console's own), refuses a requeue without the token and performs it with it.
Screenshots land in $OUTBOXD_ARTEFACT_DIR (default /tmp/outboxd-artefacts/console)."""
import os
import shutil
import tempfile

import pytest

from smtp_servers import wait_until
from test_console_web import HOSTILE, TOKEN, failed_message, start_console

webdriver = pytest.importorskip("selenium.webdriver", reason="python3-selenium is needed")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTEFACTS = os.environ.get("OUTBOXD_ARTEFACT_DIR", os.path.join(tempfile.gettempdir(), "outboxd-artefacts", "console"))

pytestmark = pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                                reason="chromium and chromium-driver are needed (ops/scripts/deps.sh)")


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="outboxd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER, log_output=os.devnull) \
        if hasattr(webdriver, "ChromeService") else \
        webdriver.chrome.service.Service(executable_path=CHROMEDRIVER, log_path=os.devnull)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver, name):
    os.makedirs(ARTEFACTS, exist_ok=True)
    path = os.path.join(ARTEFACTS, name)
    assert driver.save_screenshot(path), path
    return path


def no_alert(driver):
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_console_in_chromium(browser, migrated_db, smtp_sink, outboxd_factory, tmp_path):
    console = start_console(outboxd_factory, migrated_db, smtp_sink, tmp_path)
    db = migrated_db
    mid = failed_message(db)
    wait = WebDriverWait(browser, 20)

    browser.get(console.base + "/")
    row = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-id="{mid}"]')))
    shot(browser, "overview.png")
    # the hostile subject and relay text are shown as text; nothing of them became markup
    assert HOSTILE in row.find_element(By.CSS_SELECTOR, "td.subj").text
    assert "550" in row.text and "no such user" in row.text and "Victim@Example.com" in row.text
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1
    assert no_alert(browser)
    # the console's own style applied (the CSP lets it through) and its charts drawn
    header = browser.find_element(By.TAG_NAME, "header")
    assert header.value_of_css_property("background-color") in ("rgba(29, 35, 48, 1)", "rgb(29, 35, 48)")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart")

    # without the token: refused, and the message stays failed
    row.find_element(By.CSS_SELECTOR, "button.act").click()
    flash = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#flash.bad")))
    assert "token" in flash.text
    shot(browser, "requeue-refused.png")
    assert db.scalar(f"SELECT state FROM outbox.messages WHERE id = {mid}") == "failed"

    # with the token: requeued, then delivered to the sink
    token = browser.find_element(By.ID, "token")
    token.send_keys(TOKEN)
    browser.find_element(By.TAG_NAME, "h1").click()  # blur: the change event stores the token
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "button.act").is_enabled())
    browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{mid}"] button.act').click()
    flash = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#flash.ok")))
    assert "done" in flash.text
    shot(browser, "requeue-done.png")
    wait_until(lambda: db.scalar(f"SELECT state FROM outbox.messages WHERE id = {mid}") == "sent", 20,
               what="requeued message sent")

    # the message's history: recipients with their replies, escaped subject
    browser.get(f"{console.base}/ui/message?id={mid}")
    wait.until(EC.presence_of_element_located((By.ID, "recipients")))
    assert f"Message #{mid}" in browser.find_element(By.TAG_NAME, "h1").text
    assert "Victim@Example.com" in browser.find_element(By.ID, "recipients").text
    assert HOSTILE in browser.find_element(By.ID, "fields").text
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == [] and no_alert(browser)
    shot(browser, "message.png")

    # nothing the console served was blocked or failed in the browser
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and not ("/ui/api/requeue" in e["message"] and "403" in e["message"])]  # the refusal above
    assert not severe, severe
