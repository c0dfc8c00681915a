"""The chat page as people who use a screen reader, the keyboard alone, a phone or reduced motion meet it, in a real
headless Chromium against a real server: axe-core's audit of both views (tests/page installs it: make test runs
`npm ci` there), the live region a reply is announced through, keyboard-only sending and stopping, errors said in
words, the narrowest phones, the contrast of the fields' edges."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from server.app import Server
from server.engine.image import ImageEngine, ImageLimits
from tests.conftest import timeout
from tests.server.transport.test_page import (  # noqa: F401 (fresh_storage: autouse)
    chromium,
    fresh_storage,
    long_reply_seed,
    long_reply_streaming,
    open_page,
    replies,
    say,
    set_field,
    slowed,
    slowed_page,
    streaming,
    until,
)

pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

AXE = Path(__file__).resolve().parents[2] / "page" / "node_modules" / "axe-core" / "axe.min.js"
needs_axe = pytest.mark.skipif(
    not AXE.is_file(), reason="tests/page/node_modules is absent: run `npm ci --prefix tests/page` (make test does)"
)
IMAGE_MODELS = Path(__file__).resolve().parents[3] / "models" / "image"
AUDIO = {"max_text_chars": 200, "max_seconds": 5.0}
# An element inside one of these is read out by a screen reader whenever its text changes.
LIVE = '[aria-live]:not([aria-live="off"]), [role="log"], [role="status"], [role="alert"], [role="marquee"]'


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module."""
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def plain_media(page: WebDriver) -> Iterator[None]:
    """Each test starts and ends with the browser's own media features and screen size."""
    yield
    page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    page.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def emulate(page: WebDriver, **features: str) -> None:
    """Emulate media features, e.g. ``prefers_color_scheme="dark"``."""
    listed = [{"name": name.replace("_", "-"), "value": value} for name, value in features.items()]
    page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": listed})


def serious(page: WebDriver) -> list[str]:
    """axe-core's violations of serious or critical impact on the page as it is now (target-size included), one
    line each with the elements it names."""
    page.execute_script(AXE.read_text())
    violations = page.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, { rules: { "target-size": { enabled: true } } })
          .then((result) => done(result.violations))
          .catch((error) => done([{ id: "axe failed", impact: "critical", help: String(error), nodes: [] }]));
        """
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} {json.dumps([n['target'] for n in v['nodes']])}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def serious_in_both_schemes(page: WebDriver) -> list[str]:
    found = []
    for scheme in ("light", "dark"):
        emulate(page, prefers_color_scheme=scheme)
        found += [f"{scheme}: {line}" for line in serious(page)]
    emulate(page)
    return found


def announced(page: WebDriver) -> list[str]:
    """What the page's polite live region was given since record_announcements, one entry a change."""
    return page.execute_script("return window.heard")


RECORD_ANNOUNCEMENTS = """
    window.heard = [];
    new MutationObserver((changes) => {
      for (const change of changes) for (const node of change.addedNodes) window.heard.push(node.textContent.trim());
    }).observe(document.getElementById("announce"), { childList: true, subtree: true, characterData: true });
"""


async def record_announcements(page: WebDriver) -> None:
    assert page.find_elements(By.ID, "announce"), "the page has no #announce live region"
    await asyncio.to_thread(page.execute_script, RECORD_ANNOUNCEMENTS)


def object_id(page: WebDriver, element_id: str) -> str:
    """The CDP remote object of the element ``element_id``."""
    found = page.execute_cdp_cmd("Runtime.evaluate", {"expression": f"document.getElementById('{element_id}')"})
    return found["result"]["objectId"]


def focused(page: WebDriver) -> str:
    return page.execute_script("return document.activeElement.id || document.activeElement.tagName")


async def press(page: WebDriver, *keys: str) -> None:
    """Keys typed where the focus is, as a keyboard would."""
    await asyncio.to_thread(ActionChains(page).send_keys(*keys).perform)


async def tab_to(page: WebDriver, element_id: str, most: int = 30) -> None:
    """Tab from the page's start until ``element_id`` has the focus."""
    await asyncio.to_thread(page.execute_script, "document.activeElement.blur()")
    for _ in range(most):
        await press(page, Keys.TAB)
        if focused(page) == element_id:
            return
    raise AssertionError(f"Tab never reached #{element_id}")


def contrast(foreground: str, background: str) -> float:
    """WCAG's contrast ratio of two computed colours ("rgb(r, g, b)")."""

    def luminance(colour: str) -> float:
        channels = [int(c) / 255 for c in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.fixture
def start_images(
    serve_engines: Callable[..., Awaitable[Server]], make_text_engine: Callable[..., Any]
) -> Callable[..., Awaitable[Server]]:
    """``await start_images(*families)``: a server of the tiny text model and the committed image models named."""

    async def start(*families: str) -> Server:
        engines = [
            ImageEngine.from_checkpoint(IMAGE_MODELS / f"{family}.safetensors", family, ImageLimits())
            for family in families
        ]
        return await serve_engines(text=[make_text_engine()], images=engines)

    return start


async def open_images(page: WebDriver, server: Server) -> None:
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "tabs").is_displayed())
    await asyncio.to_thread(page.find_element(By.ID, "tab-images").click)
    await until(lambda: page.find_element(By.ID, "image-form").is_displayed())


async def image_made(page: WebDriver) -> None:
    await until(lambda: page.execute_script("const log = window.antiphonImages.log; return log.at(-1)?.final"))
    await until(lambda: page.find_element(By.ID, "image-generate").is_enabled())


# -- axe-core ---------------------------------------------------------------------
@needs_axe
async def test_axe_finds_nothing_serious_on_the_chat(start_server: Callable[..., Any], page: WebDriver) -> None:
    """axe-core finds no serious or critical violation on the chat, with speech and classifiers shown, in light and
    dark colour schemes: before a reply, after one, and with a refused field marked."""
    server = await start_server(audio=AUDIO, classifiers=("digits", "textdisc"))
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "classify").is_displayed())
    assert serious_in_both_schemes(page) == []
    await set_field(page, "max-tokens", "12")
    await say(page, "Hail.")
    await until(lambda: replies(page) and not streaming(page))
    assert serious_in_both_schemes(page) == []
    await set_field(page, "max-tokens", "999999")
    await say(page, "Hail.")
    await until(lambda: page.find_element(By.ID, "error").text)
    assert serious_in_both_schemes(page) == []


@needs_axe
async def test_axe_finds_nothing_serious_on_the_images_tab(
    start_images: Callable[..., Awaitable[Server]], page: WebDriver
) -> None:
    """axe-core finds no serious or critical violation on the Images tab: before an image, after a chain's frames
    (viewer, progress, frames strip, history, download), and with Deep Dream's fields."""
    server = await start_images("rbm", "evaluator")
    await open_images(page, server)
    assert serious_in_both_schemes(page) == []
    await set_field(page, "image-steps", "20")
    await asyncio.to_thread(page.find_element(By.ID, "image-generate").click)
    await image_made(page)
    assert serious_in_both_schemes(page) == []
    await asyncio.to_thread(Select(page.find_element(By.ID, "image-model")).select_by_value, "evaluator")
    await until(lambda: page.find_element(By.ID, "image-dream-fields").is_displayed())
    assert serious_in_both_schemes(page) == []


# -- screen readers ---------------------------------------------------------------
async def test_a_reply_is_announced_a_sentence_at_a_time(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """The reply growing token by token sits in no live region (a screen reader would read it again from its start
    at every token); the polite live region is given it in whole sentences, the first with the speaker's name, then
    how it ended."""
    await slowed_page(start_server, page)
    await set_field(page, "max-tokens", "60")
    await set_field(page, "seed", str(long_reply_seed(tiny_text_model, "Speak on.", chars=20)))
    await record_announcements(page)
    await asyncio.to_thread(
        page.execute_script,
        """window.rewrites = 0;
        new MutationObserver((changes) => { window.rewrites += changes.length; })
          .observe(document.getElementById("conversation"), { childList: true, subtree: true, characterData: true });
        """,
    )
    await say(page, "Speak on.")
    text = await until(lambda: page.find_elements(By.CSS_SELECTOR, ".turn.streaming .text"))
    assert page.execute_script("return arguments[0].closest(arguments[1])", text[0], LIVE) is None
    await until(lambda: replies(page) and not streaming(page))
    reply = replies(page)[0]
    notes = [e.text for e in page.find_elements(By.CSS_SELECTOR, ".turn.assistant .note")]
    heard = announced(page)
    assert " ".join(" ".join(heard).split()) == " ".join(["Lear:", *reply.split(), *notes]), heard
    assert len(heard) < page.execute_script("return window.rewrites") - 2  # fewer than the reply's rewrites


async def test_a_stopped_reply_is_announced_as_stopped(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """Stop: the live region is given what came of the reply, then that it was stopped."""
    engine = await slowed_page(start_server, page)
    await record_announcements(page)
    await long_reply_streaming(page, engine, tiny_text_model)
    await asyncio.to_thread(page.find_element(By.ID, "stop").click)
    await until(lambda: page.find_elements(By.CSS_SELECTOR, ".turn.assistant .note"))
    assert announced(page)[-1] == "stopped"
    assert " ".join(" ".join(announced(page)[:-1]).split()).endswith(" ".join(replies(page)[0].split()))


async def test_the_streaming_cursor_is_not_read_out(start_server: Callable[..., Any], page: WebDriver) -> None:
    """The cursor drawn after a reply being written is not in the accessibility tree (a screen reader would say
    "lower left block")."""
    server = await start_server()
    await open_page(page, server)
    await asyncio.to_thread(page.execute_script, "addTurn('assistant streaming', 'Lear', 'Speak')")
    tree = await asyncio.to_thread(page.execute_cdp_cmd, "Accessibility.getFullAXTree", {})
    names = [str((node.get("name") or {}).get("value", "")) for node in tree["nodes"]]
    assert any(name == "Speak" for name in names)
    assert not [name for name in names if "▍" in name]


async def test_the_cursor_stands_still_for_reduced_motion(start_server: Callable[..., Any], page: WebDriver) -> None:
    """The streaming cursor blinks, unless the reader asks for reduced motion."""
    server = await start_server()
    await open_page(page, server)
    await asyncio.to_thread(page.execute_script, "addTurn('assistant streaming', 'Lear', 'Speak')")
    animation = "return getComputedStyle(document.querySelector('.turn.streaming .text'), '::after').animationName"
    assert page.execute_script(animation) == "blink"
    emulate(page, prefers_reduced_motion="reduce")
    assert page.execute_script(animation) == "none"


async def test_the_speaker_select_is_named_by_its_visible_label(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """The persona select's accessible name holds its visible label, "Speaker", so voice control can name it."""
    server = await start_server()
    await open_page(page, server)
    node = page.execute_cdp_cmd("DOM.describeNode", {"objectId": object_id(page, "model")})["node"]
    tree = page.execute_cdp_cmd("Accessibility.getPartialAXTree", {"backendNodeId": node["backendNodeId"]})
    assert tree["nodes"][0]["name"]["value"].startswith("Speaker")


async def test_an_image_is_announced_once_made_not_at_every_frame(
    start_images: Callable[..., Awaitable[Server]], page: WebDriver
) -> None:
    """A chain showing every frame: its caption, rewritten at each, is in no live region; the live region is given
    the image once, when made; the progress bar has a name."""
    server = await start_images("rbm")
    await open_images(page, server)
    assert page.execute_script("return document.getElementById('image-caption').closest(arguments[0])", LIVE) is None
    await set_field(page, "image-steps", "12")
    await set_field(page, "image-every", "1")
    await record_announcements(page)
    await asyncio.to_thread(page.find_element(By.ID, "image-generate").click)
    await image_made(page)
    caption = page.find_element(By.ID, "image-caption").text
    assert "Gibbs step 12 of 12, done in" in caption
    assert announced(page) == [caption]
    assert page.find_element(By.ID, "image-progress").get_attribute("aria-label") == "frames made"


# -- the keyboard -------------------------------------------------------------------
async def test_the_keyboard_alone_sends_a_line_and_stops_the_reply(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """From the page's start, Tab reaches the box; Shift+Enter starts a new line, Enter sends; Tab goes on to Stop
    (Send waits), Enter there stops the reply and frees the server's slot, and the focus returns to the box."""
    engine = await slowed_page(start_server, page)
    await set_field(page, "seed", str(long_reply_seed(tiny_text_model, "Speak on.\nI pray.")))
    await tab_to(page, "message")
    new_line = ActionChains(page).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT)
    await press(page, "Speak on.")
    await asyncio.to_thread(new_line.perform)
    await press(page, "I pray.", Keys.ENTER)
    await until(lambda: engine.live_streams == 1 and any(replies(page)))
    assert [e.text for e in page.find_elements(By.CSS_SELECTOR, ".turn.user .text")] == ["Speak on.\nI pray."]
    assert focused(page) == "message"
    await press(page, Keys.TAB)
    assert focused(page) == "stop"
    await press(page, Keys.ENTER)
    note = await until(lambda: page.find_elements(By.CSS_SELECTOR, ".turn.assistant .note"))
    assert note[0].text == "stopped"
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
    assert focused(page) == "message"


async def test_send_pressed_by_keyboard_hands_the_focus_to_stop_and_back(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """Send pressed by keyboard is disabled while the reply streams: the focus moves to Stop, not to the page's
    start, and back to the box when the reply ends."""
    await slowed_page(start_server, page)
    await set_field(page, "max-tokens", "20")
    await set_field(page, "seed", str(long_reply_seed(tiny_text_model, "Speak on.", chars=20)))
    await asyncio.to_thread(page.find_element(By.ID, "message").send_keys, "Speak on.")
    await press(page, Keys.TAB)
    assert focused(page) == "send"
    await press(page, Keys.SPACE)
    await until(lambda: streaming(page))
    assert focused(page) == "stop"
    await until(lambda: replies(page) and not streaming(page))
    assert focused(page) == "message"


async def test_enter_that_ends_a_composition_sends_nothing(start_server: Callable[..., Any], page: WebDriver) -> None:
    """Enter pressed to pick a word in an input method (Japanese, Chinese, Korean) does not send the line; the box
    tells a screen reader which keys send and start a new line."""
    server = await start_server()
    await open_page(page, server)
    box = page.find_element(By.ID, "message")
    await asyncio.to_thread(box.send_keys, "こんにちは")
    await asyncio.to_thread(
        page.execute_script,
        "arguments[0].dispatchEvent(new KeyboardEvent('keydown', "
        "{key: 'Enter', keyCode: 229, isComposing: true, bubbles: true, cancelable: true}))",
        box,
    )
    await asyncio.sleep(0.3)
    assert page.find_elements(By.CSS_SELECTOR, ".turn") == []
    assert box.get_attribute("value") == "こんにちは"
    keys = page.execute_script("return document.getElementById(arguments[0]).textContent", "message-keys")
    assert box.get_attribute("aria-describedby") == "message-keys"
    assert " ".join(keys.split()) == "Enter sends, Shift+Enter starts a new line, Escape stops a reply."


# -- errors -----------------------------------------------------------------------------
async def test_a_busy_server_is_said_plainly_and_the_page_recovers(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """A 429 (every stream slot taken) says the server is busy and when to try again, puts the line back in the
    box and leaves Send ready; once the slot is free, the same line gets its reply."""
    server = await start_server(max_streams=1, max_waiting=0, stream_buffer=2)
    engine = server.models.text["tiny"]
    slowed(engine)
    await open_page(page, server)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_slot() -> None:
        """A completion of 2,000 slowed steps (no turn's end to stop at) holds the only slot until released."""
        body = {"model": "tiny", "prompt": "Kent.\n", "max_tokens": 2000, "stream": True}
        http = httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(30))
        async with http, http.stream("POST", "/v1/completions", json=body):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold_the_slot())
    try:
        await asyncio.wait_for(holding.wait(), timeout(10))
        await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 1), timeout(10))
        await say(page, "Speak on.")
        error = await until(lambda: page.find_element(By.ID, "error").text)
        assert error.startswith("The server is busy: try again in 1 s. (It said: overloaded: "), error
        assert page.find_element(By.ID, "message").get_attribute("value") == "Speak on."
        assert page.find_element(By.ID, "send").is_enabled()
        assert not page.find_element(By.ID, "stop").is_displayed()
    finally:
        release.set()
        await holder
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
    await set_field(page, "max-tokens", "8")
    await asyncio.to_thread(page.find_element(By.ID, "send").click)
    await until(lambda: replies(page) and not streaming(page))
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None


PROXY_ERROR_PAGE = """
    window.fetch = async () => new Response("<html><body>502 Bad Gateway</body></html>",
      { status: 502, headers: { "Content-Type": "text/html" } });
"""


async def test_an_answer_that_is_not_the_servers_is_said_in_words(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """A proxy's 502 page in place of the server's answer is told as the server not answering, to try again, not
    as a bare "HTTP 502"; the line goes back to the box."""
    server = await start_server()
    await open_page(page, server)
    await asyncio.to_thread(page.execute_script, PROXY_ERROR_PAGE)
    await say(page, "Hail.")
    error = await until(lambda: page.find_element(By.ID, "error").text)
    assert error == "The server could not answer (HTTP 502): try again in a moment."
    assert page.find_element(By.ID, "message").get_attribute("value") == "Hail."


# -- phones, contrast ----------------------------------------------------------------------
def sideways(page: WebDriver, width: int) -> list[str]:
    """What sticks out sideways at ``width`` px: the page itself, or a scrolling box wider than it shows."""
    return page.execute_script(
        """
        const width = arguments[0];
        const out = [];
        if (document.documentElement.scrollWidth > width) out.push(`page ${document.documentElement.scrollWidth}`);
        for (const element of document.querySelectorAll("#conversation, .turn .text, #error, #images-panel")) {
          if (element.offsetParent !== null && element.scrollWidth > element.clientWidth + 1) {
            out.push(`${element.id || element.className} ${element.scrollWidth} > ${element.clientWidth}`);
          }
        }
        return out;
        """,
        width,
    )


def phone(page: WebDriver, width: int) -> None:
    metrics = {"width": width, "height": 740, "deviceScaleFactor": 1, "mobile": True}
    page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


async def test_a_long_unbroken_line_fits_a_narrow_phone(start_server: Callable[..., Any], page: WebDriver) -> None:
    """On phones 360 and 320 px wide (WCAG's reflow width), a line with no space to break at (a pasted link) wraps
    in the conversation: nothing scrolls sideways."""
    server = await start_server()
    await open_page(page, server)
    link = "https://example.org/" + "a" * 200
    await set_field(page, "max-tokens", "4")
    await say(page, link)
    await until(lambda: replies(page) and not streaming(page))
    for width in (360, 320):
        phone(page, width)
        await asyncio.sleep(0.2)
        assert sideways(page, width) == [], width


async def test_the_images_tab_fits_a_narrow_phone(
    start_images: Callable[..., Awaitable[Server]], page: WebDriver
) -> None:
    """On phones 360 and 320 px wide, the Images tab with an image made fits: nothing scrolls sideways."""
    server = await start_images("dcgan")
    await open_images(page, server)
    await asyncio.to_thread(page.find_element(By.ID, "image-generate").click)
    await image_made(page)
    for width in (360, 320):
        phone(page, width)
        await asyncio.sleep(0.2)
        assert sideways(page, width) == [], width
        right = page.execute_script("return document.getElementById('image-view').getBoundingClientRect().right")
        assert right <= width


async def test_a_dark_system_gets_a_dark_page(start_server: Callable[..., Any], page: WebDriver) -> None:
    """With the reader's system in dark mode the page is dark (the paper and panels dark, the words light, at 7:1
    and more), and light again in light mode; axe-core's contrast audit covers both (above)."""
    server = await start_server()
    await open_page(page, server)
    read = """
        const style = (selector) => getComputedStyle(document.querySelector(selector));
        return [style("html").backgroundColor, style("body").color, style("#settings").backgroundColor,
                style("#message").backgroundColor, style("#message").color];
    """
    light = page.execute_script(read)
    emulate(page, prefers_color_scheme="dark")
    paper, ink, panel, field, typed = page.execute_script(read)
    black, white = "rgb(0, 0, 0)", "rgb(255, 255, 255)"
    assert contrast(paper, black) < 1.5 and contrast(panel, black) < 1.5 and contrast(field, black) < 1.5
    assert contrast(ink, paper) >= 7 and contrast(typed, field) >= 7
    emulate(page, prefers_color_scheme="light")
    assert page.execute_script(read) == light and contrast(light[0], white) < 1.1


async def test_the_fields_edges_stand_out(start_server: Callable[..., Any], page: WebDriver) -> None:
    """The edge of every text field and select shows at 3:1 against what it sits on (WCAG's non-text contrast): a
    field is seen to be one before anything is typed in it."""
    server = await start_server()
    await open_page(page, server)
    edges = page.execute_script(
        """
        const backdrop = (element) => {
          for (let at = element.parentElement; at; at = at.parentElement) {
            const colour = getComputedStyle(at).backgroundColor;
            if (colour !== "rgba(0, 0, 0, 0)") return colour;
          }
          return "rgb(255, 255, 255)";
        };
        return ["message", "model", "top-k", "max-tokens", "seed"].map((id) => {
          const element = document.getElementById(id);
          return [id, getComputedStyle(element).borderTopColor, backdrop(element)];
        });
        """
    )
    weak = [(field, round(contrast(edge, behind), 2)) for field, edge, behind in edges if contrast(edge, behind) < 3]
    assert weak == []
