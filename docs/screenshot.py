"""Make docs/page.png and docs/page-images.png: the chat page in headless Chromium, on the committed models, after
one exchange, and its Images tab after a few images.

    .venv/bin/python docs/screenshot.py [--out docs/page.png] [--message "Speak, good sir."] [--persona falstaff]
                                        [--images-out docs/page-images.png] [--dark]

Starts `antiphon serve` on free ports, opens the page, sends one line with a fixed seed, waits for the reply to
finish and saves the first screenshot; then on the Images tab makes DCGAN images of a few classes and an RBM chain,
each with a fixed seed, saves the second and stops the server. Needs Debian's chromium and chromium-driver (make
test installs them) and the selenium package.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "page.png")
    parser.add_argument("--message", default="Speak, good sir: what news from the court?")
    parser.add_argument("--persona", default="falstaff")
    parser.add_argument("--seed", default="7")
    parser.add_argument("--images-out", type=Path, default=REPO / "docs" / "page-images.png")
    parser.add_argument("--dark", action="store_true", help="as a reader whose system asks for a dark colour scheme")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--grpc-port", "0", "--ws-port", "0", "--http-port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert server.stderr is not None
    try:
        for line in server.stderr:
            if match := re.search(r"listening .* http=(\S+)", line):
                address = match.group(1)
                break
        else:
            print("the server exited before listening", file=sys.stderr)
            return 1
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,820"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
        try:
            if args.dark:
                features = [{"name": "prefers-color-scheme", "value": "dark"}]
                driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})
            driver.get(f"http://{address}/")
            while len(driver.find_elements(By.CSS_SELECTOR, "#model option")) < 2:
                time.sleep(0.05)
            Select(driver.find_element(By.ID, "model")).select_by_value(f"char-lstm/{args.persona}")
            driver.execute_script("arguments[0].value = arguments[1]", driver.find_element(By.ID, "seed"), args.seed)
            driver.find_element(By.ID, "message").send_keys(args.message)
            driver.find_element(By.ID, "send").click()
            time.sleep(0.3)
            while driver.find_elements(By.CSS_SELECTOR, ".turn.streaming"):
                time.sleep(0.05)
            driver.save_screenshot(str(args.out))
            images(driver)
            driver.save_screenshot(str(args.images_out))
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out} and {args.images_out}")
    return 0


# The Images tab's pictures: (model, class, seed, Gibbs steps), the last one left in the viewer.
PICTURES = [
    ("dcgan", "Sneaker", 3, None),
    ("dcgan", "Dress", 5, None),
    ("dcgan", "Bag", 8, None),
    ("dcgan", "Ankle boot", 2, None),
    ("dcgan", "Trouser", 4, None),
    ("rbm", "", 9, 200),
]


def images(driver: webdriver.Chrome) -> None:
    """On the Images tab, make each of PICTURES and wait for its last frame."""
    driver.find_element(By.ID, "tab-images").click()
    for model, label, seed, steps in PICTURES:
        Select(driver.find_element(By.ID, "image-model")).select_by_value(model)
        if label:
            Select(driver.find_element(By.ID, "image-class")).select_by_visible_text(label)
        fields = {"image-seed": seed, "image-steps": steps}
        for field, value in fields.items():
            if value is not None:
                driver.execute_script(
                    "arguments[0].value = arguments[1]", driver.find_element(By.ID, field), str(value)
                )
        made = len(driver.find_elements(By.CSS_SELECTOR, "#image-history li"))
        driver.find_element(By.ID, "image-generate").click()
        while len(driver.find_elements(By.CSS_SELECTOR, "#image-history li")) == made:
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
