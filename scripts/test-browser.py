#!/usr/bin/env python3
"""The real-browser test of `ocular eval --html` (run by `make test-browser`).

  test-browser.py images DIR        writes two small generated PNG images into DIR
  test-browser.py check PAGE SHOT   opens PAGE in headless Chromium through chromedriver
                                    (WebDriver, standard library only), checks that every <img>
                                    has loaded (naturalWidth > 0), moves the first slider with a
                                    key press on the range input, checks that the pictures shown
                                    changed and loaded, and saves a screenshot to SHOT.

Everything is checked from outside the page: the script reads element properties through
WebDriver; the page runs no self-test. Exits non-zero with a message on the first failure.
"""

import base64
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ARROW_RIGHT = "\ue014"
# Generous: on a loaded machine Chromium can take tens of seconds to start.
CALL_TIMEOUT_S = 180
TIMEOUT_S = 60


class Failure(Exception):
    """A check failed: the message says which."""


def write_png(path, width, height, pixel):
    """An 8-bit RGB PNG of pixel(x, y) -> (r, g, b)."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height)
    )

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


def make_images(folder):
    """Two images large enough for MS-SSIM (both sides >= 161): rings and a textured ramp."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def rings(x, y):
        r = math.hypot(x - 90, y - 80)
        v = int(127 + 120 * math.sin(r / 3.0))
        return (v, (x * 255) // 191, 255 - v)

    def ramp(x, y):
        noise = (x * 7919 + y * 104729 + x * y) % 37
        return ((x + noise) % 256, (y * 2 + noise) % 256, (x + y) % 256)

    write_png(folder / "rings.png", 192, 176, rings)
    write_png(folder / "ramp.png", 176, 192, ramp)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    """The few WebDriver commands this test needs (W3C protocol over HTTP)."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        url = self.base + (f"/session/{self.session}" if self.session else "") + path
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as error:
            raise Failure(f"WebDriver {method} {path}: {error.read().decode(errors='replace')}")
        except (OSError, ValueError, KeyError) as error:
            raise Failure(f"WebDriver {method} {path}: no answer from chromedriver ({error!r})")

    def start(self):
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1600,1200",
                ],
            },
        }
        value = self.call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = value["sessionId"]

    def find_all(self, css, within=None):
        path = f"/element/{within}/elements" if within else "/elements"
        found = self.call("POST", path, {"using": "css selector", "value": css})
        return [next(iter(element.values())) for element in found]

    def find(self, css, within=None):
        found = self.find_all(css, within)
        if not found:
            raise Failure(f"no element matches {css!r}")
        return found[0]

    def prop(self, element, name):
        return self.call("GET", f"/element/{element}/property/{name}")

    def displayed(self, element):
        return self.call("GET", f"/element/{element}/displayed")


def wait_for(what, condition):
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        result = condition()
        if result is True:
            return
        if time.monotonic() > deadline:
            raise Failure(f"{what} (after {TIMEOUT_S} s): {result}")
        time.sleep(0.2)


def not_loaded(driver, images):
    """The images not yet loaded, as [(src, complete, naturalWidth)], or True if none."""
    states = [(driver.prop(i, "src"), driver.prop(i, "complete"), driver.prop(i, "naturalWidth"))
              for i in images]
    broken = [s[0] for s in states if s[1] and not s[2]]
    if broken:
        raise Failure(f"images failed to load (complete, naturalWidth 0): {broken}")
    pending = [s for s in states if not s[1]]
    return True if not pending else pending


def check_page(driver, page):
    driver.call("POST", "/url", {"url": page.resolve().as_uri()})
    wait_for("the page did not finish loading",
             lambda: driver.call("POST", "/execute/sync",
                                 {"script": "return document.readyState", "args": []}) == "complete"
             or "still loading")
    images = driver.find_all("img")
    if len(images) < 4:
        raise Failure(f"expected at least 4 <img> on the page, found {len(images)}")
    wait_for("some images have naturalWidth 0", lambda: not_loaded(driver, images))
    print(f"test-browser: all {len(images)} images loaded (naturalWidth > 0)")

    section = driver.find("section.cmp")
    slider = driver.find("input.step", section)
    steps = int(driver.prop(slider, "max")) + 1
    if steps < 2:
        raise Failure(f"the first section's slider has {steps} step(s); the test needs 2 or more")
    # The first codec column (after the original) shows a different picture at each step.
    column = driver.find_all("figure[data-srcs]", section)[1]
    main = driver.find("img.main", column)
    zoomed = driver.find("img.zoomed", column)
    captions = driver.find_all("figcaption", column)
    before = (driver.prop(main, "src"), driver.prop(zoomed, "src"), driver.prop(slider, "value"))
    if not driver.displayed(captions[0]) or driver.displayed(captions[1]):
        raise Failure("before moving the slider, the caption of step 0 alone should be shown")

    driver.call("POST", f"/element/{slider}/value", {"text": ARROW_RIGHT})
    after = (driver.prop(main, "src"), driver.prop(zoomed, "src"), driver.prop(slider, "value"))
    if after[2] != "1":
        raise Failure(f"the key press did not move the slider: value {before[2]} -> {after[2]}")
    if after[0] == before[0] or after[1] == before[1]:
        raise Failure(f"moving the slider did not change the picture shown: {before} -> {after}")
    wait_for("the picture shown after moving the slider did not load",
             lambda: not_loaded(driver, [main, zoomed]))
    if driver.displayed(captions[0]) or not driver.displayed(captions[1]):
        raise Failure("after moving the slider, the caption of step 1 alone should be shown")
    print(f"test-browser: slider moved 0 -> 1 of {steps - 1}; picture {before[0].rsplit('/', 1)[-1]}"
          f" -> {after[0].rsplit('/', 1)[-1]} (loaded), captions follow")


def check(page, screenshot):
    page, screenshot = Path(page), Path(screenshot)
    if not page.is_file():
        raise Failure(f"{page} does not exist")
    port = free_port()
    log = open(screenshot.with_suffix(".chromedriver.log"), "w")
    server = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=log, stderr=log)
    driver = WebDriver(port)
    try:
        def started():
            if server.poll() is not None:
                return f"it exited with status {server.poll()}"
            return True if ready(driver) else "not ready"

        wait_for("chromedriver did not start", started)
        driver.start()
        try:
            check_page(driver, page)
            png = base64.b64decode(driver.call("GET", "/screenshot"))
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(png)
            print(f"test-browser: screenshot {screenshot} ({len(png)} bytes)")
        finally:
            try:
                driver.call("DELETE", "")  # closes the browser
            except Failure as failure:
                print(f"test-browser: note: {failure}", file=sys.stderr)
    except Failure as failure:
        raise Failure(f"{failure} (chromedriver's log: {log.name})") from None
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def ready(driver):
    try:
        with urllib.request.urlopen(driver.base + "/status", timeout=2) as response:
            return json.load(response)["value"]["ready"] is True
    except (OSError, ValueError, KeyError):
        return False


def main(argv):
    if len(argv) == 3 and argv[1] == "images":
        make_images(argv[2])
    elif len(argv) == 4 and argv[1] == "check":
        check(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Failure as failure:
        print(f"test-browser: FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
