"""serve.py's page in a real browser: headless Chromium, driven by selenium through Debian's chromedriver.

Typed with the keyboard: two German sentences, Ctrl+Enter; the English must be translate.py's. Then the
heatmap of the first translation (its cells and token labels against /attention), an error from the API
(text over --max_chars) shown in the page, and a screenshot (copied to $SERVE_SCREENSHOT if set). Without
Chromium the test is skipped with the reason; with CI=true it must run.
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, Server, post

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def browser(profile):
    """Headless Chromium as the machine's closed network wants it (no background connections)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=1100,1400"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


def test_the_page_in_a_browser_translates_shows_attention_and_errors(trained_model, tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true, and the browser test must run: install Debian's chromium and chromium-driver")
        pytest.skip("no Chromium here: apt-get install chromium chromium-driver to run the browser test")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    directory, flags = trained_model
    german = (directory / "test.de").read_text(encoding="utf-8").splitlines()[:2]
    expected = subprocess.run([sys.executable, str(ROOT / "translate.py"), *flags, "--nbest", "3", *german],
                              capture_output=True, text=True, timeout=300)
    assert expected.returncode == 0, expected.stderr[-2000:]
    best = [line.split(" ||| ")[1] for line in expected.stdout.splitlines()[::3]]
    server = Server(*flags, "--max_chars", "300")
    driver = browser(tmp_path / "profile")
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(server.url)
        for control in driver.find_elements(By.CSS_SELECTOR, "textarea, input, select"):  # all labelled
            assert driver.find_elements(By.CSS_SELECTOR, f"label[for='{control.get_attribute('id')}']")
        source = driver.find_element(By.ID, "source")
        source.send_keys(german[0], Keys.ENTER, german[1])
        source.send_keys(Keys.CONTROL, Keys.ENTER)  # the keyboard's way to Translate
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "article")) == 2)
        articles = driver.find_elements(By.CSS_SELECTOR, "article")
        assert [a.find_element(By.CSS_SELECTOR, "input:checked + .translation").text for a in articles] == \
            [b or "(empty)" for b in best]
        assert all(len(a.find_elements(By.CSS_SELECTOR, ".score")) == 3 for a in articles)  # the n-best lists

        articles[0].find_element(By.CSS_SELECTOR, ".show-attention").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap tbody td"))
        Select(driver.find_element(By.ID, "head")).select_by_visible_text("head 1")
        _, seen, _ = post(server.url + "/attention", {"text": german[0], "translation": best[0]})
        columns = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#heatmap thead th")]
        rows = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#heatmap tbody th")]
        cells = driver.find_elements(By.CSS_SELECTOR, "#heatmap tbody td")
        assert rows == seen["target"] and len(columns) == len(seen["source"])
        assert len(cells) == len(seen["source"]) * len(seen["target"])
        shown = [float(cell.get_attribute("data-weight")) for cell in cells[:len(seen["source"])]]
        assert shown == pytest.approx(seen["attention"][-1][0][0], abs=1e-6)  # last layer, head 1, first row
        assert len(driver.find_elements(By.CSS_SELECTOR, "#head option")) == seen["heads"] + 1  # and their mean
        driver.save_screenshot(str(tmp_path / "page.png"))

        source.clear()
        source.send_keys("eins zwei drei " * 30)
        driver.find_element(By.ID, "translate").click()
        error = wait.until(expected_conditions.visibility_of_element_located((By.ID, "error")))
        assert "--max_chars" in error.text and "300" in error.text
    except Exception:
        driver.save_screenshot(str(tmp_path / "failed.png"))  # what the page showed
        status, error = (driver.find_element(By.ID, name).text for name in ("status", "error"))
        print(f"page: {status!r}, error {error!r}, screenshot {tmp_path / 'failed.png'}")
        raise
    finally:
        driver.quit()
        code, log = server.stop()
    assert code == 0, log[-2000:]
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SERVE_SCREENSHOT"):
        shutil.copy(tmp_path / "page.png", os.environ["SERVE_SCREENSHOT"])
