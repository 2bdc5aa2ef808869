"""Look at the MLflow UI as a new user does, in headless Chromium, and save screenshots.

Dev-only (needs ``pip install selenium`` and a chromium + chromedriver, e.g. Debian's
``apt-get install chromium chromium-driver``; neither is a dependency of the project).

    fiited-bench -m method=uniform,fiited method.budget=0.5,0.25 scale=smoke \\
        tracking.uri=sqlite:///ui_check/mlflow.db
    python scripts/ui_check.py --tracking-uri sqlite:///ui_check/mlflow.db --out ui_check/shots

Steps, each with a screenshot and a line of what it found: the experiments list on a first
visit (is the assistant panel open?), the run list after choosing "Model training" and
expanding the sweep's parent run, the same list after choosing the ``val/ne`` and
``mem/total_bytes`` columns once, the compare view of two runs of different methods, and the
compare view with "Show diff only" switched on.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reports.ui import MlflowUI, UIConfig  # noqa: E402

COLUMNS = ("val/ne", "mem/total_bytes")


def browser(chromium: str, driver: str) -> webdriver.Chrome:
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1600,1000"):
        opts.add_argument(a)
    opts.binary_location = chromium
    return webdriver.Chrome(options=opts, service=Service(driver))


def text_el(d, text: str, timeout: float = 30):
    """The innermost visible element whose own text is ``text``."""
    xp = f"//*[normalize-space(text())={text!r}]"
    return WebDriverWait(d, timeout).until(EC.element_to_be_clickable((By.XPATH, xp)))


def click(d, el) -> None:
    """A click as the page handles it, also where a popover (a first-visit hint) covers it."""
    d.execute_script("arguments[0].click();", el)


def assistant_open(d) -> bool:
    return any(e.is_displayed() for e in
               d.find_elements(By.XPATH, "//*[normalize-space(text())='MLflow Assistant']"))


def shot(d, out: Path, name: str, note: str) -> None:
    d.save_screenshot(str(out / name))
    print(f"{name}: {note}", flush=True)


def choose_columns(d, names) -> None:
    """Columns -> search each name -> tick it, as a person does once."""
    d.find_element(By.XPATH, "//button[normalize-space(.)='Columns']").click()
    box = WebDriverWait(d, 20).until(EC.element_to_be_clickable(
        (By.CSS_SELECTOR, "input[placeholder='Search columns']")))
    for name in names:
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(name)
        time.sleep(1.0)
        items = [e for e in d.find_elements(By.XPATH, f"//*[normalize-space(text())={name!r}]")
                 if e.is_displayed()]
        click(d, items[-1])
        time.sleep(0.5)
    box.send_keys(Keys.ESCAPE)
    time.sleep(1.0)


def expand_parents(d) -> int:
    """Click every collapsed-parent expander in the run list; how many were clicked."""
    buttons = [b for b in d.find_elements(By.CSS_SELECTOR, "[role=gridcell] button")
               if b.is_displayed() and (b.get_attribute("aria-label") or "").lower()
               .startswith(("expand", "show"))]
    if not buttons:  # an icon-only toggle: the first button of the run-name cell
        buttons = [b for b in d.find_elements(
            By.CSS_SELECTOR, "[col-id='attributes.`Run Name`'][role=gridcell] button")
            if b.is_displayed()][:1]
    for b in buttons:
        click(d, b)
        time.sleep(1.5)
    return len(buttons)


def tick_run(d, name_part: str) -> None:
    row = d.find_element(By.XPATH, f"//a[contains(normalize-space(.), {name_part!r})]"
                                   f"/ancestor::*[@role='row']")
    index = row.get_attribute("row-index")
    box = d.find_element(By.CSS_SELECTOR, f"[role=row][row-index='{index}'] input[type=checkbox]")
    d.execute_script("arguments[0].click();", box)
    time.sleep(0.5)


def check(url: str, experiment: str, out: Path, chromium: str, driver: str) -> None:
    d = browser(chromium, driver)
    try:
        d.get(f"{url}/#/experiments")
        text_el(d, experiment)
        time.sleep(3)
        opened = assistant_open(d)
        shot(d, out, "01_first_visit.png", f"experiments list; assistant panel open: {opened}")
        if opened:
            click(d, d.find_element(By.XPATH, "//button[@aria-label='Close']"))
            time.sleep(1)
            d.refresh()
            text_el(d, experiment)
            time.sleep(3)
            print(f"after closing it once and reloading, assistant open: {assistant_open(d)}")
        d.find_element(By.LINK_TEXT, experiment).click()
        time.sleep(5)
        print(f"experiment link opens {d.current_url.split('?')[0]} "
              f"(GenAI view: {'workflowType=genai' in d.current_url or '/overview' in d.current_url})")
        click(d, text_el(d, "Model training"))
        time.sleep(2)
        if "/runs" not in d.current_url:
            click(d, d.find_element(By.LINK_TEXT, experiment))
        WebDriverWait(d, 30).until(lambda x: "/runs" in x.current_url)
        time.sleep(4)
        n = expand_parents(d)
        evaluation = bool(d.find_elements(By.XPATH, "//*[contains(text(), 'Evaluation run')]"))
        shot(d, out, "02_runs.png", f"model-training run list, {n} parent(s) expanded; "
                                    f"'Evaluation run' label shown: {evaluation}")
        choose_columns(d, COLUMNS)
        headers = [h.text for h in d.find_elements(By.CSS_SELECTOR, "[role=columnheader]")
                   if h.text.strip()]
        shot(d, out, "03_columns.png", f"after choosing {', '.join(COLUMNS)}: headers {headers}")
        tick_run(d, "uniform 1/2")
        tick_run(d, "fiited K=4 1/2")
        click(d, d.find_element(By.XPATH, "//button[normalize-space(.)='Compare']"))
        WebDriverWait(d, 30).until(lambda x: "compare-runs" in x.current_url)
        time.sleep(5)
        body = d.find_element(By.TAG_NAME, "body").text
        first = " | ".join(ln for ln in body.splitlines()[:60] if ln.strip())
        shot(d, out, "04_compare.png", f"compare view; first lines: {first[:900]}")
        toggles = [t for t in d.find_elements(By.XPATH, "//*[normalize-space(text())="
                                                        "'Show diff only']") if t.is_displayed()]
        for t in toggles:
            d.execute_script("arguments[0].scrollIntoView({block: 'center'});", t)
            click(d, t)
            time.sleep(0.5)
        for t, what in zip(toggles, ("parameters", "metrics", "tags")):
            d.execute_script("arguments[0].scrollIntoView({block: 'start'});", t)
            time.sleep(1)
            rows = [ln for ln in d.find_element(By.TAG_NAME, "body").text.splitlines()
                    if ln.strip()]
            at = next((i for i, ln in enumerate(rows) if ln.strip() == "Show diff only"), 0)
            shot(d, out, f"05_diff_only_{what}.png", f"'Show diff only' on, {what}: "
                 + " | ".join(rows[at + 1:at + 25])[:700])
    except (NoSuchElementException, TimeoutException, IndexError) as e:
        shot(d, out, "error.png", f"stopped: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        raise
    finally:
        d.quit()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", required=True, help="the sqlite store of a smoke sweep")
    p.add_argument("--experiment", default="fiited-bench")
    p.add_argument("--out", type=Path, required=True, help="screenshot directory")
    p.add_argument("--url", default=None, help="a running UI instead of starting one")
    p.add_argument("--chromium", default=shutil.which("chromium") or "chromium",
                   help="the browser binary (default: chromium on PATH)")
    p.add_argument("--chromedriver", default=shutil.which("chromedriver") or "chromedriver",
                   help="the driver binary (default: chromedriver on PATH)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.url:
        check(args.url, args.experiment, args.out, args.chromium, args.chromedriver)
        return 0
    with MlflowUI(UIConfig(args.tracking_uri, startup_timeout_s=180)) as ui:
        check(ui.url, args.experiment, args.out, args.chromium, args.chromedriver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
