"""netdsl serve in a real browser: headless Chromium (Debian's package) driven by Playwright, against
the real server started as `netdsl serve FILE --port 0`. One test per interaction.

Skipped when chromium or playwright is missing, unless NETDSL_REQUIRE_BROWSER=1 (what .ci/browser
sets): then a missing browser is a failure. NETDSL_SCREENSHOTS=1 rewrites docs/images/playground-*.png.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

REQUIRED = os.environ.get("NETDSL_REQUIRE_BROWSER") == "1"
#: A real browser costs minutes: the heavy tier (.ci/browser runs it with --heavy).
pytestmark = pytest.mark.heavy
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None
_missing = ("playwright is not installed" if sync_playwright is None else
            "no chromium on PATH (apt-get install chromium)" if CHROMIUM is None else None)
if _missing:
    if REQUIRED:
        pytest.fail(f"NETDSL_REQUIRE_BROWSER=1 but {_missing}", pytrace=False)
    pytest.skip(_missing, allow_module_level=True)
pytest.importorskip("starlette")

SCREENSHOTS = os.environ.get("NETDSL_SCREENSHOTS") == "1"
TIMEOUT_MS = 20_000
SMALL = "input 3x32x32\nconv3-8 - pool - fc10"
SMALL_PARAMS = 3 * 9 * 8 + 8 + 8 * 16 * 16 * 10 + 10


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real server on a free loopback port, editing a copy of the shipped resnet50.net."""
    folder = tmp_path_factory.mktemp("served")
    file = folder / "resnet50.net"
    shutil.copy(ROOT / "networks" / "resnet50.net", file)
    process = subprocess.Popen([sys.executable, "-m", "netdsl.cli", "serve", str(file), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        process.stdout.readline()
        address = process.stdout.readline().split()[-1]
        assert address.startswith("http://127.0.0.1:"), address
        yield address, file
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(served[0])
    expect(page.locator("#drawing svg")).to_be_visible()
    yield page
    context.close()
    assert problems == []  # no script error, no Content-Security-Policy violation


def screenshot(page, name):
    if SCREENSHOTS:
        page.screenshot(path=str(ROOT / "docs" / "images" / f"playground-{name}.png"))


def replace_text(page, text):
    page.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.type(text)


def wait_for_params(page, params):
    expect(page.locator("#totals")).to_have_attribute("data-params", str(params))


def test_opens_file_with_its_drawing_and_table(page):
    wait_for_params(page, 25_557_032)  # FILE is resnet50.net
    expect(page.locator("#save")).to_have_text("Save resnet50.net")
    expect(page.locator("#drawing svg g#box5")).to_be_visible()
    screenshot(page, "resnet50")


def test_type_a_network_and_see_params_and_node(page):
    replace_text(page, SMALL)
    wait_for_params(page, SMALL_PARAMS)
    expect(page.locator("#summary tbody tr")).to_have_count(4)  # input, conv (relu fused), pool, fc
    expect(page.locator("#row1 td").nth(3)).to_have_text(f"{3 * 9 * 8 + 8:,}")
    conv = page.locator("#drawing svg g#ir1")
    expect(conv).to_contain_text("conv3-8+relu")
    expect(conv).to_contain_text("8x32x32")


def test_a_mistake_is_underlined_where_it_is_and_clears_when_fixed(page):
    replace_text(page, SMALL + "x")
    underline = page.locator(".cm-lintRange-error")
    expect(underline).to_have_count(1)
    expect(underline).to_have_text("fc10x")
    line = page.locator(".cm-line").nth(1)
    assert underline.evaluate("e => e.closest('.cm-line') !== null")
    expect(line).to_contain_text("conv3-8 - pool - fc10x")
    underline.hover()
    expect(page.locator(".cm-tooltip-lint")).to_contain_text("unknown op or definition fc10x")
    expect(page.locator("#diagnostics .error")).to_have_text(
        re.compile(r"^2:18: error: unknown op or definition fc10x"))
    screenshot(page, "error")
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    expect(underline).to_have_count(0)
    expect(page.locator("#diagnostics")).to_be_empty()
    wait_for_params(page, SMALL_PARAMS)


def test_click_a_collapsed_block_to_expand_it(page):
    wait_for_params(page, 25_557_032)
    expect(page.locator("#depth")).to_have_text("1")
    box = page.locator("#drawing svg g#box5")  # the box whose first layer is node 5
    expect(box).to_contain_text("bottleneck_down(64, 1)")
    box.click()  # opens that box only
    expect(page.locator("#drawing svg g.cluster", has_text="bottleneck_down(64, 1)")).to_have_count(1)
    expect(box).to_contain_text("cbr(1, 64, 1)")  # the first box inside it shares its id
    expect(page.locator("#drawing svg g#box17")).to_contain_text("bottleneck(64)")  # still shut
    expect(page.locator("#depth")).to_have_text("1")
    box.click()  # one level further down the same box
    expect(page.locator("#drawing svg g#ir5")).to_contain_text("conv1-64")
    expect(page.locator("#drawing svg g#box8")).to_contain_text("cbr(3, 64, 1)")  # its sibling: shut
    page.locator("#collapse").click()  # shuts the box opened last
    expect(page.locator("#drawing svg g#ir5")).to_have_count(0)
    expect(box).to_contain_text("cbr(1, 64, 1)")
    page.locator("#collapse").click()
    expect(box).to_contain_text("bottleneck_down(64, 1)")
    last_stage = page.locator("#drawing svg g#box141")  # stage4's first block, far down
    expect(last_stage).to_contain_text("bottleneck_down(512, 2)")
    last_stage.click()
    expect(last_stage).to_contain_text("cbr(1, 512, 1)")
    expect(last_stage).to_be_in_viewport()  # what the click opened is kept in view
    expect(page.locator("#drawing svg g#box5")).to_contain_text("bottleneck_down(64, 1)")
    page.locator("#collapse").click()
    page.locator("#collapse").click()  # nothing left open: one level less everywhere
    expect(page.locator("#depth")).to_have_text("0")
    page.locator("#expand-all").click()
    expect(page.locator("#depth")).to_have_text("all")
    expect(page.locator("#drawing svg g.box")).to_have_count(0)


def test_hover_a_layer_highlights_its_source_and_row(page):
    replace_text(page, SMALL)
    wait_for_params(page, SMALL_PARAMS)
    page.locator("#drawing svg g#ir2").hover()
    expect(page.locator(".cm-netdsl-lit")).to_have_text("pool")
    expect(page.locator("#row2")).to_have_class("lit")
    page.locator("#row3").hover()
    expect(page.locator(".cm-netdsl-lit")).to_have_text("fc10")
    expect(page.locator("#drawing svg g#ir3")).to_have_class(re.compile(r"\blit\b"))
    # the hovered layer's worked arithmetic: fc10 reads 8x16x16
    expect(page.locator("#explain")).to_contain_text("8*16*16*10 + 10 = 20,490")
    page.locator("#drawing svg g#ir1").hover()
    expect(page.locator("#explain")).to_contain_text("[3*3*3 x 32*32] = [27 x 1024]")
    screenshot(page, "hover")


def test_the_cursor_in_the_source_highlights_the_layer(page):
    replace_text(page, "input 3x32x32\ndef block(c) = conv3-c - pool\nblock(8) - block(16) - fc10")
    wait_for_params(page, 3 * 9 * 8 + 8 + 8 * 9 * 16 + 16 + 16 * 8 * 8 * 10 + 10)
    page.keyboard.press("Home")  # the last line: block(8) - block(16) - fc10
    for _ in range(len("block(8) - bloc")):
        page.keyboard.press("ArrowRight")  # the cursor inside the call block(16)
    expect(page.locator("#drawing svg g.lit")).to_have_count(2)  # its conv and its pool
    expect(page.locator("#drawing svg g#ir3")).to_have_class(re.compile(r"\blit\b"))
    expect(page.locator("#summary tr.lit")).to_have_count(2)
    page.keyboard.press("End")  # after fc10
    expect(page.locator("#drawing svg g#ir5")).to_have_class(re.compile(r"\blit\b"))


def test_pick_a_shipped_network(page):
    page.locator("#shipped").select_option("vgg16")
    wait_for_params(page, 138_357_544)
    expect(page.locator(".cm-content")).to_contain_text("fc4096")
    page.locator("#shipped").select_option("resnet")
    expect(page.locator("#net option")).to_have_count(15)
    page.locator("#net").select_option("resnet152")
    wait_for_params(page, 60_192_808)


def test_download(page):
    replace_text(page, SMALL)
    wait_for_params(page, SMALL_PARAMS)
    with page.expect_download() as download:
        page.locator("#download").click()
    assert download.value.suggested_filename == "resnet50.net"
    with open(download.value.path(), encoding="utf-8") as handle:
        assert handle.read() == SMALL


def test_save_writes_the_file(page, served):
    _, file = served
    replace_text(page, SMALL)
    wait_for_params(page, SMALL_PARAMS)
    page.locator("#save").click()
    expect(page.locator("#status")).to_have_text("saved resnet50.net")
    assert file.read_text(encoding="utf-8") == SMALL
    page.reload()
    wait_for_params(page, SMALL_PARAMS)  # the page opens what was saved
    page.locator(".cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.type("0")  # fc100
    wait_for_params(page, SMALL_PARAMS - 10 * (8 * 16 * 16 + 1) + 100 * (8 * 16 * 16 + 1))
    page.keyboard.press("Control+s")
    expect(page.locator("#status")).to_have_text("saved resnet50.net")
    assert file.read_text(encoding="utf-8") == SMALL + "0"


def test_user_text_is_shown_as_text(page):
    replace_text(page, "input 4\nfc2 - <img src=x>")
    expect(page.locator("#diagnostics .error")).to_contain_text("<")
    assert page.locator("#diagnostics img, #drawing img").count() == 0
