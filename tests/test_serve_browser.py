"""serve.py's page in a real browser: headless Chromium, driven by selenium through Debian's chromedriver.

Typed with the keyboard: two German paragraphs, Ctrl+Enter; the English must be translate.py
--split_sentences', paragraph by paragraph, with each sentence's n-best list. Then the heatmap of the second
sentence (its cells and token labels against /attention), an error from the API (text over --max_chars)
shown in the page, a screenshot (copied to $SERVE_SCREENSHOT if set), and the API docs page, every request
of which stays on 127.0.0.1. Without
Chromium the test is skipped with the reason; with CI=true it must run.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, Server, get, post

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
    german = [line.capitalize() for line in (directory / "test.de").read_text(encoding="utf-8").splitlines()[:3]]
    # two paragraphs: the first of two sentences, the second of one
    expected = subprocess.run([sys.executable, str(ROOT / "translate.py"), *flags, "--split_sentences",
                               "--beam_size", "3",  # the page's: its beam is widened to the 3 translations asked
                               f"{german[0]}. {german[1]}.", f"{german[2]}."], capture_output=True, text=True,
                              timeout=300)
    assert expected.returncode == 0, expected.stderr[-2000:]
    best = expected.stdout.split("\n")[:2]
    server = Server(*flags, "--max_chars", "300")
    driver = browser(tmp_path / "profile")
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(server.url)
        for control in driver.find_elements(By.CSS_SELECTOR, "textarea, input, select"):  # all labelled
            assert driver.find_elements(By.CSS_SELECTOR, f"label[for='{control.get_attribute('id')}']")
        source = driver.find_element(By.ID, "source")
        source.send_keys(f"{german[0]}. {german[1]}.", Keys.ENTER, Keys.ENTER, f"{german[2]}.")
        source.send_keys(Keys.CONTROL, Keys.ENTER)  # the keyboard's way to Translate
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "article")) == 2)
        articles = driver.find_elements(By.CSS_SELECTOR, "article")
        assert [a.find_element(By.CSS_SELECTOR, ".paragraph-translation").get_attribute("textContent")
                for a in articles] == best
        sentences = driver.find_elements(By.CSS_SELECTOR, "section.sentence")
        assert [len(a.find_elements(By.CSS_SELECTOR, "section.sentence")) for a in articles] == [2, 1]
        assert all(len(s.find_elements(By.CSS_SELECTOR, ".score")) == 3 for s in sentences)  # the n-best lists

        sentences[1].find_element(By.CSS_SELECTOR, ".show-attention").click()  # the second sentence's
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap tbody td"))
        Select(driver.find_element(By.ID, "head")).select_by_visible_text("head 1")
        chosen = sentences[1].find_element(By.CSS_SELECTOR, "input:checked + .translation").text
        _, seen, _ = post(server.url + "/attention", {"text": f"{german[1]}.",
                                                      "translation": "" if chosen == "(empty)" else chosen})
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
        driver.find_element(By.LINK_TEXT, "API docs").click()  # the docs, served from here: nothing leaves
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
        operations = sum(map(len, json.loads(get(server.url + "/openapi.json")[1])["paths"].values()))
        assert len(driver.find_elements(By.CSS_SELECTOR, ".opblock")) == operations == 11  # every endpoint
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(url.startswith(server.url + "/") for url in loaded), loaded
    except Exception:
        driver.save_screenshot(str(tmp_path / "failed.png"))  # what the page showed
        status, error = ([e.text for e in driver.find_elements(By.ID, name)] for name in ("status", "error"))
        print(f"page: {status!r}, error {error!r}, screenshot {tmp_path / 'failed.png'}")
        raise
    finally:
        driver.quit()
        code, log = server.stop()
    assert code == 0, log[-2000:]
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SERVE_SCREENSHOT"):
        shutil.copy(tmp_path / "page.png", os.environ["SERVE_SCREENSHOT"])
