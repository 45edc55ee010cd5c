"""The page in a real headless Chromium: upload an image, read the label from the page.

Needs Debian's ``chromium`` and the ``playwright`` Python package (no browser download:
Playwright drives /usr/bin/chromium).  Skipped with the reason where either is missing,
except under CI=true, where that is a failure.  Screenshots go to test-artifacts/.
"""
import base64
import json
import os
import shutil
import time

import pytest

from conftest import REPO
from serve_util import RESEARCH_NOTICE, hold_inference, read, request, running, sample_image

ARTIFACTS = os.path.join(REPO, "test-artifacts")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _missing(reason):
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but {}".format(reason))
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        _missing("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed (pip install playwright)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                     headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def big_image(tiny_data, tmp_path_factory):
    """A sample scaled up to 256 px, so the screenshot shows something."""
    import cv2
    from oncolens.appliance.imageio import read_image, write_image
    path = str(tmp_path_factory.mktemp("page") / "sample.png")
    img = read_image(sample_image(tiny_data, "malignant", 1))
    write_image(path, cv2.resize(img, (256, 256), interpolation=cv2.INTER_CUBIC))
    return path


def _wait_for(page, expression, timeout=30.0):
    """Poll ``expression`` from Python: the page's CSP forbids the eval wait_for_function uses."""
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        assert time.time() < deadline, "timed out waiting for: " + expression
        page.wait_for_timeout(100)


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1200, "height": 820})
    seen = []
    page.on("request", lambda req: seen.append(req.url))
    page.goto(url)
    _wait_for(page, "!document.getElementById('model').textContent.includes('connecting')")
    return page, seen


def test_page_upload_shows_the_label(browser, tiny_bundle, big_image):
    from oncolens.appliance.classifier import Classifier
    os.makedirs(ARTIFACTS, exist_ok=True)
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        with running(clf) as (url, _):
            expected = json.loads(request(url, "/classify", "POST", read(big_image)).body.decode())
            page, seen = _open(browser, url)
            assert "resnet18" in page.text_content("#model")
            # the research-use notice is shown at the top, seen without scrolling
            assert " ".join(page.text_content("#notice").split()) == RESEARCH_NOTICE
            assert page.is_visible("#notice")
            box = page.query_selector("#notice").bounding_box()
            assert box["height"] > 0 and box["y"] + box["height"] <= 820
            page.set_input_files("#file", big_image)
            page.wait_for_selector("#label:not([data-label=''])", timeout=30000)
            label = page.get_attribute("#label", "data-label")
            assert label == expected["label"]
            assert page.text_content("#label").endswith(" " + expected["label"])
            bars = page.query_selector_all("#bars .bar")
            assert sorted(b.get_attribute("data-class") for b in bars) == sorted(
                expected["probabilities"])
            _wait_for(page, "document.getElementById('annotated').naturalWidth > 0")
            assert page.evaluate("document.getElementById('annotated').naturalWidth") == 256
            page.screenshot(path=os.path.join(ARTIFACTS, "serve-page-upload.png"), full_page=True)
            page.close()
    assert seen and all(u.startswith(url) or u.startswith("blob:") for u in seen), seen


def test_page_drop_and_live_stream(browser, tiny_bundle, tiny_data):
    import numpy as np
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.imageio import read_image
    from oncolens.appliance.web.live import open_live_sink
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = sample_image(tiny_data, "normal", 0)
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        sink = open_live_sink(":0", classifier=clf)
        try:
            frame = np.array(read_image(path))
            sink.write(None, frame)
            page, _ = _open(browser, sink.url)
            page.wait_for_selector("#live-section", state="visible")
            _wait_for(page, "document.getElementById('live').naturalWidth > 0")
            encoded = base64.b64encode(read(path)).decode("ascii")
            page.evaluate("""(b64) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
                const drop = document.getElementById('drop');
                drop.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true,
                                                          cancelable: true}));
            }""", encoded)
            page.wait_for_selector("#label:not([data-label=''])", timeout=30000)
            expected = clf.predictions(clf.infer_images([frame]).probs[0])[0].label
            assert page.get_attribute("#label", "data-label") == expected
            page.screenshot(path=os.path.join(ARTIFACTS, "serve-page-live.png"), full_page=True)
            page.close()
        finally:
            sink.close()


def test_page_clears_the_previous_verdict(browser, tiny_bundle, big_image, tmp_path):
    """While a new image is classified, and after one is refused, no old verdict is shown."""
    import threading
    from oncolens.appliance.classifier import Classifier
    os.makedirs(ARTIFACTS, exist_ok=True)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    gate = threading.Event()
    gate.set()
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        hold_inference(clf, gate)
        with running(clf) as (url, _):
            page, _ = _open(browser, url)
            page.set_input_files("#file", big_image)
            page.wait_for_selector("#label:not([data-label=''])", timeout=30000)
            assert page.is_visible("#result")
            gate.clear()                                  # the next image waits in the model
            page.set_input_files("#file", big_image)
            _wait_for(page, "document.getElementById('status').textContent.includes('Classifying')")
            assert not page.is_visible("#result")
            assert page.get_attribute("#label", "data-label") == ""
            assert page.query_selector_all("#bars .bar") == []
            gate.set()
            page.wait_for_selector("#label:not([data-label=''])", timeout=30000)
            assert page.is_visible("#result")
            page.set_input_files("#file", str(text))      # refused: 415
            _wait_for(page, "document.getElementById('status').className === 'error'")
            assert "415" in page.text_content("#status")
            assert not page.is_visible("#result")
            assert page.get_attribute("#label", "data-label") == ""
            assert page.evaluate("document.getElementById('annotated').getAttribute('src')") is None
            page.screenshot(path=os.path.join(ARTIFACTS, "serve-page-refused.png"),
                            full_page=True)
            page.close()


def _twelve_bit_png(path, side=96):
    """A 12-bit camera's image stored as a 16-bit PNG (highest value 4095): it reads nearly
    black, and serve's answer carries a ``low_bits`` warning."""
    import cv2
    import numpy as np
    img = np.random.default_rng(7).integers(0, 4096, size=(side, side)).astype(np.uint16)
    img[0, 0] = 4095
    assert cv2.imwrite(path, img)
    return path


def test_page_shows_an_answers_warnings(browser, tiny_bundle, big_image, tmp_path,
                                        monkeypatch):
    """A low-bits 16-bit upload's warning stands under its label, as text; the next, ordinary
    answer shows none."""
    from oncolens.appliance.classifier import Classifier
    os.makedirs(ARTIFACTS, exist_ok=True)
    dark = _twelve_bit_png(str(tmp_path / "twelve_bit.png"))
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        with running(clf) as (url, _):
            answer = json.loads(request(url, "/classify", "POST", read(dark)).body.decode())
            assert [w["code"] for w in answer["warnings"]] == ["low_bits"], answer
            message = answer["warnings"][0]["message"]
            page, _ = _open(browser, url)
            assert not page.is_visible("#warnings")
            page.set_input_files("#file", dark)
            page.wait_for_selector("#label:not([data-label=''])", timeout=30000)
            assert page.get_attribute("#label", "data-label") == answer["label"]
            assert page.is_visible("#warnings")
            items = page.query_selector_all("#warnings li")
            assert [i.get_attribute("data-code") for i in items] == ["low_bits"]
            assert items[0].text_content() == "Warning: " + message
            # next to the result: between the label and the probability bars
            label, warning = page.query_selector("#label"), page.query_selector("#warnings")
            bars = page.query_selector("#bars")
            assert (label.bounding_box()["y"] < warning.bounding_box()["y"]
                    < bars.bounding_box()["y"])
            page.screenshot(path=os.path.join(ARTIFACTS, "serve-page-warning.png"),
                            full_page=True)
            page.set_input_files("#file", big_image)       # an ordinary image: no warning
            _wait_for(page, "document.getElementById('annotated').naturalWidth === 256")
            assert page.query_selector_all("#warnings li") == []
            assert not page.is_visible("#warnings")
            # a message is shown as text, never parsed as markup
            markup = '<b id="bold">x</b><img id="injected" src="x">'
            monkeypatch.setattr("oncolens.appliance.web.classify.low_bits_advice",
                                lambda peak: markup)
            page.set_input_files("#file", dark)
            _wait_for(page, "document.querySelectorAll('#warnings li').length === 1")
            assert page.text_content("#warnings li") == "Warning: " + markup
            assert page.evaluate("document.getElementById('injected') === null && "
                                 "document.getElementById('bold') === null")
            page.close()
