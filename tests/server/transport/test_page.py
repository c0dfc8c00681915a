"""The chat page in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium) against a real
server: one behaviour per test, a screenshot kept under runs/screenshots when one fails."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from server.engine.text import TextEngine
from tests.conftest import timeout
from tests.server.helpers import reference_text

pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

STEP_S = 0.05  # each model step waits this long, so a reply visibly grows (the model work itself is the real one)


def chromium(microphone: Path | None = None) -> WebDriver:
    binary = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    assert binary and driver, "Debian's chromium and chromium-driver are needed (make test installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,800",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the module; its fake microphone says "yes" (espeak-ng, 16 kHz mono)."""
    word = tmp_path_factory.mktemp("microphone") / "yes.wav"
    subprocess.run(["espeak-ng", "-w", str(word), "yes"], check=True)
    driver = chromium(word)
    yield driver
    driver.quit()


def long_reply_seed(tiny_text_model: Any, message: str, persona: str = "Lear", chars: int = 40) -> int:
    """A seed whose reply to ``message`` runs past ``chars`` characters, so it can be seen growing or stopped."""
    prompt = f"Kent.\n{message}\n\n{persona}.\n"
    return next(
        seed
        for seed in range(500)
        if len(reference_text(tiny_text_model, prompt, seed=seed, stop=("\n\n",))[0]) > chars
    )


def slowed(engine: TextEngine) -> None:
    advance = engine.backend.advance

    def slow(*args: Any) -> Any:
        time.sleep(STEP_S)
        return advance(*args)

    engine.backend.advance = slow  # type: ignore[method-assign,assignment]


async def until(check: Callable[[], Any], seconds: float = 10) -> Any:
    """Poll ``check`` (it reads the page) off the event loop until it returns something truthy."""
    deadline = time.monotonic() + timeout(seconds)
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("the page never got there")


async def open_page(page: WebDriver, server: Any) -> None:
    await asyncio.to_thread(page.get, f"http://{server.http_address}/")
    await until(lambda: len(page.find_elements(By.CSS_SELECTOR, "#model option")) > 1)


async def say(page: WebDriver, text: str) -> None:
    def type_and_send() -> None:
        box = page.find_element(By.ID, "message")
        box.clear()
        box.send_keys(text)
        page.find_element(By.ID, "send").click()

    await asyncio.to_thread(type_and_send)


async def set_field(page: WebDriver, field: str, value: str) -> None:
    element = page.find_element(By.ID, field)
    await asyncio.to_thread(page.execute_script, "arguments[0].value = arguments[1]", element, value)


def replies(page: WebDriver) -> list[str]:
    return [e.text for e in page.find_elements(By.CSS_SELECTOR, ".turn.assistant .text")]


async def test_page_lists_every_persona(start_server: Callable[..., Any], page: WebDriver) -> None:
    """The page loads from the server alone and offers the model's personas to speak with."""
    server = await start_server()
    await open_page(page, server)
    options = [o.get_attribute("value") for o in Select(page.find_element(By.ID, "model")).options]
    assert options == ["tiny", "tiny/lear", "tiny/kent", "tiny/fool", "tiny/edgar"]
    assert page.title == "antiphon"


async def test_reply_streams_in_and_a_follow_up_keeps_the_conversation(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """A line sent gets a reply that grows in several steps; a second line continues the same conversation (the
    server resumes from the kept state of the first exchange)."""
    server = await start_server(stream_buffer=2)
    engine = server.models.text["tiny"]
    slowed(engine)
    await open_page(page, server)
    await set_field(page, "max-tokens", "40")
    await set_field(page, "seed", str(long_reply_seed(tiny_text_model, "Good night, my lord.", chars=10)))
    await say(page, "Good night, my lord.")
    seen: set[str] = set()

    def grown() -> bool:
        texts = replies(page)
        if texts:
            seen.add(texts[-1])
        return not page.find_elements(By.CSS_SELECTOR, ".turn.streaming") and bool(texts)

    await until(grown)
    assert len(seen - {""}) >= 2, seen  # the reply was seen part-written, then whole
    await say(page, "Come hither.")
    await until(lambda: len(replies(page)) == 2 and not page.find_elements(By.CSS_SELECTOR, ".turn.streaming"))
    assert engine.prefixes.hits == 1
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None


async def test_stop_ends_the_reply_and_frees_its_slot(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """Stop ends a streaming reply where it is: the page says so and the server's slot is free again."""
    server = await start_server(stream_buffer=2)
    engine = server.models.text["tiny"]
    slowed(engine)
    seed = long_reply_seed(tiny_text_model, "Speak on.")
    await open_page(page, server)
    await asyncio.to_thread(Select(page.find_element(By.ID, "model")).select_by_value, "tiny")
    await set_field(page, "seed", str(seed))
    await say(page, "Speak on.")
    await until(lambda: engine.live_streams == 1 and any(replies(page)))
    await asyncio.to_thread(page.find_element(By.ID, "stop").click)
    await until(lambda: page.find_elements(By.CSS_SELECTOR, ".turn.assistant .note"))
    assert page.find_element(By.CSS_SELECTOR, ".turn.assistant .note").text == "stopped"
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))


async def test_an_error_shows_as_a_message(start_server: Callable[..., Any], page: WebDriver) -> None:
    """A request the server refuses shows its message on the page, and the line is kept to send again."""
    server = await start_server()
    await open_page(page, server)
    await set_field(page, "max-tokens", "999999")
    await say(page, "Hail.")
    error = await until(lambda: page.find_element(By.ID, "error").text)
    assert error.startswith("max_tokens: must be in 1..")
    assert page.find_element(By.ID, "message").get_attribute("value") == "Hail."
    assert page.find_elements(By.CSS_SELECTOR, ".turn") == []  # the unanswered line left the conversation


async def test_speak_switch_schedules_audio_while_the_reply_streams(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """With an audio model served, the speak switch shows; switched on, the reply's sentences are spoken through
    /v1/audio/speech and their samples scheduled on the page's AudioContext."""
    server = await start_server(audio={"max_text_chars": 200, "max_seconds": 5.0})
    await open_page(page, server)
    assert page.find_element(By.ID, "speak-switch").is_displayed()
    await asyncio.to_thread(page.find_element(By.ID, "speak").click)
    await set_field(page, "max-tokens", "60")
    await set_field(page, "seed", str(long_reply_seed(tiny_text_model, "Good night, my lord.", chars=10)))
    await say(page, "Good night, my lord.")
    scheduled = await until(lambda: page.execute_script("return window.antiphonSpeech.scheduled"), seconds=30)
    assert scheduled >= 1
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None


async def test_no_speak_switch_without_an_audio_model(start_server: Callable[..., Any], page: WebDriver) -> None:
    """Without an audio model the page offers no speak switch (and lists no audio model as a speaker)."""
    server = await start_server()
    await open_page(page, server)
    assert not page.find_element(By.ID, "speak-switch").is_displayed()


async def test_no_images_tab_without_an_image_model(start_server: Callable[..., Any], page: WebDriver) -> None:
    """Without image models the page shows no tabs: the chat alone, as before (tests/.../test_page_images.py has
    the Images tab)."""
    server = await start_server()
    await open_page(page, server)
    await until(lambda: page.execute_script("return localStorage.getItem('antiphon.tab')"))  # tabs arranged
    assert not page.find_element(By.ID, "tabs").is_displayed()
    assert page.find_element(By.ID, "composer").is_displayed()


def label_rows(page: WebDriver) -> list[str]:
    return [e.text for e in page.find_elements(By.CSS_SELECTOR, "#labels .label")]


async def test_a_drawn_digit_gets_its_labels(start_server: Callable[..., Any], page: WebDriver) -> None:
    """A digit drawn with the mouse on the classify panel's canvas is classified by the digits CNN: the three most
    probable labels show."""
    server = await start_server(classifiers=("digits",))
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "classify-digit").is_displayed())

    def draw_a_one() -> None:
        canvas = page.find_element(By.ID, "digit")
        page.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        ActionChains(page).move_to_element_with_offset(canvas, 0, -60).click_and_hold().move_by_offset(
            0, 120
        ).release().perform()
        page.find_element(By.ID, "digit-go").click()

    await asyncio.to_thread(draw_a_one)
    labels = await until(lambda: label_rows(page))
    assert len(labels) == 3 and set(labels) <= {str(d) for d in range(10)}
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None


async def test_pasted_text_gets_its_labels(start_server: Callable[..., Any], page: WebDriver) -> None:
    """Pasted text goes to the text discriminator; its labels show."""
    server = await start_server(classifiers=("textdisc",))
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "classify-text").is_displayed())
    box = page.find_element(By.ID, "classify-input")
    passage = "Now is the winter of our discontent made glorious summer by this sun of York."
    await asyncio.to_thread(box.send_keys, passage)
    await asyncio.to_thread(page.execute_script, "arguments[0].scrollIntoView()", box)
    await asyncio.to_thread(page.find_element(By.ID, "text-go").click)
    labels = await until(lambda: label_rows(page))
    assert len(labels) >= 2
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None


async def test_recording_a_word_answers_with_labels_or_a_message(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """Record 1 s sends a second of the microphone to the keyword spotter and shows its labels; where the browser
    has no microphone (Debian's headless Chromium here finds no fake capture device) it says so, never nothing."""
    server = await start_server(classifiers=("kws",))
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "classify-word").is_displayed())
    await asyncio.to_thread(page.find_element(By.ID, "record").click)
    outcome = await until(lambda: label_rows(page) or page.find_element(By.ID, "error").text, seconds=20)
    assert (isinstance(outcome, list) and len(outcome) == 3) or str(outcome).startswith("Microphone: ")


# -- API keys ----------------------------------------------------------------
KEY = "sk-page/key+1"


async def test_a_server_with_a_key_asks_for_it(start_server: Callable[..., Any], page: WebDriver) -> None:
    """The page of a server that needs a key loads (its files are open), shows its Access section and says the
    key is needed; nothing is listed."""
    server = await start_server(settings={"api_key": KEY})
    await asyncio.to_thread(page.get, f"http://{server.http_address}/")
    error = await until(lambda: page.find_element(By.ID, "error").text)
    assert error == "Cannot list the models: This server needs an API key: enter it under Access."
    assert page.find_element(By.ID, "api-key").is_displayed()
    assert page.find_elements(By.CSS_SELECTOR, "#model option") == []


async def test_with_the_key_the_page_chats(start_server: Callable[..., Any], page: WebDriver) -> None:
    """The key entered under Access lists the personas and gets a reply; unless asked to remember it, it is kept
    for the tab only (sessionStorage, not localStorage)."""
    server = await start_server(settings={"api_key": KEY})
    await asyncio.to_thread(page.get, f"http://{server.http_address}/")
    await until(lambda: page.find_element(By.ID, "api-key").is_displayed())
    await asyncio.to_thread(page.find_element(By.ID, "api-key").send_keys, KEY + "\n")
    await until(lambda: len(page.find_elements(By.CSS_SELECTOR, "#model option")) > 1)
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None
    await set_field(page, "max-tokens", "8")
    await say(page, "Hail.")
    await until(lambda: not page.find_elements(By.CSS_SELECTOR, ".turn.streaming") and replies(page))
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None
    stored = await asyncio.to_thread(
        page.execute_script,
        "return [sessionStorage.getItem('antiphon.apiKey'), localStorage.getItem('antiphon.apiKey')]",
    )
    assert stored == [KEY, None]


@pytest.mark.parametrize(("offered_key", "outcome"), [(KEY, "antiphon tiny"), ("sk-wrong", "refused")])
async def test_a_browser_websocket_sends_the_key_as_a_subprotocol(
    start_server: Callable[..., Any], page: WebDriver, offered_key: str, outcome: str
) -> None:
    """A browser's WebSocket offering ``antiphon`` and ``antiphon.bearer.`` + base64url(key) opens with the server's
    key (the server selects ``antiphon``, so the browser accepts the handshake) and is refused with another."""
    server = await start_server(settings={"api_key": KEY})
    await asyncio.to_thread(page.get, f"http://{server.http_address}/healthz")
    script = """
        const [address, key, done] = arguments;
        const encoded = btoa(key).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
        const ws = new WebSocket(`ws://${address}/`, ["antiphon", `antiphon.bearer.${encoded}`]);
        ws.onopen = () => ws.send(JSON.stringify({ type: "list_models", id: "m" }));
        ws.onmessage = (event) => { done(`${ws.protocol} ${JSON.parse(event.data).models[0].id}`); ws.close(); };
        ws.onerror = () => done("refused");
    """
    answer = await asyncio.to_thread(page.execute_async_script, script, server.ws_address, offered_key)
    assert answer == outcome
