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
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from server.engine.text import TextEngine
from tests.conftest import timeout
from tests.server.helpers import reference_text

pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

STEP_S = 0.05  # each model step waits this long, so a reply visibly grows (the model work itself is the real one)
REBOUND = "attacker.example"  # the browser resolves it to 127.0.0.1


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
        f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1",  # a site's name rebound to this machine (DNS rebinding)
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for console_errors
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the module; its fake microphone says "yes" (espeak-ng, 16 kHz mono)."""
    word = tmp_path_factory.mktemp("microphone") / "yes.wav"
    subprocess.run(["espeak-ng", "-w", str(word), "yes"], check=True)
    driver = chromium(word)
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def fresh_storage(page: WebDriver) -> Iterator[None]:
    """Each test's page forgets what the one before kept (a later server may get the same port, so origin)."""
    yield
    page.execute_script("try { sessionStorage.clear(); localStorage.clear(); } catch (e) {}")


def console_errors(page: WebDriver) -> list[str]:
    """The console's errors since the last call (reading the log empties it)."""
    return [entry["message"] for entry in page.get_log("browser") if entry["level"] == "SEVERE"]


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


async def slowed_page(start_server: Callable[..., Any], page: WebDriver, **limits: Any) -> TextEngine:
    """A started server (a stream buffer of 2, and ``limits``) whose engine steps slowly, and ``page`` open on it."""
    server = await start_server(stream_buffer=2, **limits)
    engine: TextEngine = server.models.text["tiny"]
    slowed(engine)
    await open_page(page, server)
    return engine


async def long_reply_streaming(
    page: WebDriver, engine: TextEngine, tiny_text_model: Any, line: str = "Speak on."
) -> None:
    """``line`` said with a seed whose reply is long; returns once the reply streams."""
    await set_field(page, "seed", str(long_reply_seed(tiny_text_model, line)))
    await say(page, line)
    await until(lambda: engine.live_streams == 1 and any(replies(page)))


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
    engine = await slowed_page(start_server, page)
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
    engine = await slowed_page(start_server, page)
    await asyncio.to_thread(Select(page.find_element(By.ID, "model")).select_by_value, "tiny")
    await long_reply_streaming(page, engine, tiny_text_model)
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
    assert page.find_element(By.ID, "labels-of").text == "The passage, by textdisc:"  # which tool answered
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None


async def test_an_empty_passage_is_told_in_the_classify_panel(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """Classify with no text says so in the Classify panel itself, and the labels shown before go."""
    server = await start_server(classifiers=("textdisc",))
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "classify-text").is_displayed())
    box = page.find_element(By.ID, "classify-input")
    await asyncio.to_thread(box.send_keys, "Now is the winter of our discontent.")
    await asyncio.to_thread(page.find_element(By.ID, "text-go").click)
    await until(lambda: label_rows(page))
    await asyncio.to_thread(box.clear)
    await asyncio.to_thread(page.find_element(By.ID, "text-go").click)
    assert await until(lambda: page.find_element(By.ID, "classify-error").text) == "Paste a passage first."
    assert label_rows(page) == []
    assert not page.find_element(By.ID, "labels-of").is_displayed()
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None


async def test_a_blank_canvas_asks_for_a_digit(start_server: Callable[..., Any], page: WebDriver) -> None:
    """Classify on the digit canvas before anything is drawn asks for a digit instead of classifying white."""
    server = await start_server(classifiers=("digits",))
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "classify-digit").is_displayed())
    await asyncio.to_thread(page.find_element(By.ID, "digit-go").click)
    assert await until(lambda: page.find_element(By.ID, "classify-error").text) == "Draw a digit first."
    assert label_rows(page) == []


async def test_recording_a_word_answers_with_labels_or_a_message(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """Record 1 s sends a second of the microphone to the keyword spotter and shows its labels; where the browser
    has no microphone (Debian's headless Chromium here finds no fake capture device) it says so, never nothing."""
    server = await start_server(classifiers=("kws",))
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "classify-word").is_displayed())
    hint = page.find_element(By.CSS_SELECTOR, "#classify-word .hint").text
    labels = server.models.classifier_infos()[0].labels  # what the spotter hears: the page names those words
    assert "zero to nine" in hint and {"zero", "nine", "unknown"} <= set(labels) and "yes" not in labels
    await asyncio.to_thread(page.find_element(By.ID, "record").click)
    outcome = await until(lambda: label_rows(page) or page.find_element(By.ID, "classify-error").text, seconds=20)
    assert (isinstance(outcome, list) and len(outcome) == 3) or str(outcome).startswith("Microphone: ")


ROOT = Path(__file__).resolve().parents[3]


async def committed_classifiers(serve_engines: Callable[..., Any], make_text_engine: Any) -> Any:
    """A server over the committed keyword spotter and digits CNN (the tiny ones hear nothing yet)."""
    from server.engine.classify import LOADERS

    return await serve_engines(
        text=[make_text_engine()],
        classifiers=[
            LOADERS["kws"](ROOT / "models/kws/kws_dscnn.safetensors", "kws"),
            LOADERS["digits"](ROOT / "models/digits/digits_cnn.safetensors", "digits"),
        ],
    )


async def test_an_opened_recording_is_heard(
    serve_engines: Callable[..., Any], make_text_engine: Any, page: WebDriver, tmp_path: Path
) -> None:
    """A recording opened from a file (the microphone's alternative; here a stereo 44.1 kHz WAV, 3 s, the word in the
    middle) is mixed, resampled and sent by the browser: the committed spotter hears the word, and the labels say
    which file they are of."""
    import numpy as np
    from scipy.io import wavfile

    from server.data.speech import Rendering, render

    word = render("seven", Rendering("en-us", 150, 50), sample_rate=44100)
    clip = np.zeros(3 * 44100, np.float32)
    clip[66150 - len(word) // 2 :][: len(word)] = word
    path = tmp_path / "seven.wav"
    wavfile.write(path, 44100, (np.stack([clip, 0.5 * clip], axis=1) * 20000).astype(np.int16))
    server = await committed_classifiers(serve_engines, make_text_engine)
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "classify-word").is_displayed())
    await asyncio.to_thread(page.find_element(By.ID, "word-file").send_keys, str(path))
    labels = await until(lambda: label_rows(page), seconds=20)
    assert labels[0] == "seven" and len(labels) == 3
    assert page.find_element(By.ID, "labels-of").text == "The word in seven.wav, by kws:"
    long = tmp_path / "long.wav"  # 40 s, over the server's 30: the page sends its loudest second
    quiet = np.zeros(40 * 44100, np.float32)
    quiet[25 * 44100 :][: len(word)] = word
    wavfile.write(long, 44100, (quiet * 20000).astype(np.int16))
    await asyncio.to_thread(page.find_element(By.ID, "word-file").send_keys, str(long))
    await until(lambda: page.find_element(By.ID, "labels-of").text == "The word in long.wav, by kws:")
    assert label_rows(page)[0] == "seven"
    broken = tmp_path / "notes.wav"
    broken.write_text("not a recording")
    await asyncio.to_thread(page.find_element(By.ID, "word-file").send_keys, str(broken))
    message = await until(lambda: page.find_element(By.ID, "classify-error").text)
    assert message == "notes.wav: not a recording this browser can read."
    assert label_rows(page) == []


async def test_an_opened_picture_of_a_digit_is_classified(
    serve_engines: Callable[..., Any], make_text_engine: Any, page: WebDriver, tmp_path: Path
) -> None:
    """A picture opened from a file (the drawing's alternative, reachable from the keyboard) is fitted onto the pad,
    turned round when its digit is light on dark, and classified as the model sees the same 8x8 cells."""
    import numpy as np
    import torch
    from PIL import Image

    from server.vision.checkpoint import load_digits_model
    from server.vision.data import recorded_split

    model, meta = load_digits_model(ROOT / "models/digits/digits_cnn.safetensors")
    images, labels = recorded_split(meta["data"]["test_indices"]).test
    cells = np.minimum(16, images * 1.5)  # the pad's cells: its ink scaled as a pen's strokes are
    with torch.no_grad():
        predicted = model(torch.from_numpy(cells)).argmax(1).numpy()
    pick = int(np.flatnonzero((predicted == labels) & (labels == 4))[0])  # one the model gets right on the pad
    light_on_dark = np.kron(images[pick] / 16 * 255, np.ones((20, 20))).astype(np.uint8)  # 160 x 160
    path = tmp_path / "four.png"
    Image.fromarray(light_on_dark, mode="L").convert("RGB").save(path)
    server = await committed_classifiers(serve_engines, make_text_engine)
    await open_page(page, server)
    await until(lambda: page.find_element(By.ID, "classify-digit").is_displayed())
    await asyncio.to_thread(page.find_element(By.ID, "digit-file").send_keys, str(path))
    shown = await until(lambda: label_rows(page))
    assert shown[0] == "4"
    assert page.find_element(By.ID, "labels-of").text == "The digit in four.png, by digits:"


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


# -- stopping, starting over, speech -------------------------------------------
def streaming(page: WebDriver) -> bool:
    return bool(page.find_elements(By.CSS_SELECTOR, ".turn.streaming"))


def conversation(page: WebDriver) -> list[dict[str, str]]:
    """The conversation the page will send with its next line (role and content of each message)."""
    return page.execute_script("return window.antiphonChat.messages.map(({role, content}) => ({role, content}))")


async def test_new_chat_while_a_reply_streams_starts_empty(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """New chat during a reply aborts it, and the aborted reply leaves nothing in the new conversation."""
    engine = await slowed_page(start_server, page)
    await long_reply_streaming(page, engine, tiny_text_model)
    await asyncio.to_thread(page.find_element(By.ID, "new-chat").click)
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
    await until(lambda: not page.execute_script("return window.antiphonChat.controller"))
    assert conversation(page) == []
    assert page.find_elements(By.CSS_SELECTOR, ".turn") == []
    assert page.find_element(By.ID, "send").is_enabled()


async def test_escape_stops_the_reply(start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any) -> None:
    """Escape stops a streaming reply as Stop does."""
    engine = await slowed_page(start_server, page)
    await long_reply_streaming(page, engine, tiny_text_model)
    await asyncio.to_thread(page.find_element(By.ID, "message").send_keys, Keys.ESCAPE)
    note = await until(lambda: page.find_elements(By.CSS_SELECTOR, ".turn.assistant .note"))
    assert note[0].text == "stopped"
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))


async def test_the_stopped_note_shows_above_the_composer(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """In a conversation long enough to scroll, the note a stopped reply gets is scrolled into view, not left under
    the composer."""
    engine = await slowed_page(start_server, page)
    await asyncio.to_thread(page.execute_script, "for (let i = 0; i < 30; i++) addTurn('user', 'You', 'Hail.')")
    await long_reply_streaming(page, engine, tiny_text_model)
    await asyncio.to_thread(page.find_element(By.ID, "stop").click)
    await until(lambda: page.find_elements(By.CSS_SELECTOR, ".turn.assistant .note"))
    note_bottom, box_bottom = page.execute_script(
        "return [document.querySelector('.turn.assistant .note').getBoundingClientRect().bottom,"
        " document.getElementById('conversation').getBoundingClientRect().bottom]"
    )
    assert note_bottom <= box_bottom + 1


def speech_left(page: WebDriver) -> int:
    """The sentences still being spoken by the server, and the buffers scheduled that have not ended."""
    return page.execute_script("return window.antiphonSpeech.pending + window.antiphonSpeech.sources.size")


@pytest.mark.parametrize("how", ["stop", "escape", "new-chat", "speak"])
async def test_speech_stops_after_the_text_has_ended(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any, how: str
) -> None:
    """Speech still queued or playing once the reply's text has ended keeps Stop shown; Stop, Escape, New chat or
    unticking Speak aborts its requests (the server's audio slots free) and cuts the audio scheduled."""
    server = await start_server(audio={"max_text_chars": 200, "max_seconds": 5.0})
    audio = server.models.audio["tiny-wavenet"]
    await open_page(page, server)
    await asyncio.to_thread(page.find_element(By.ID, "speak").click)
    await set_field(page, "max-tokens", "60")
    await set_field(page, "seed", str(long_reply_seed(tiny_text_model, "Good night, my lord.", chars=10)))
    await say(page, "Good night, my lord.")
    await until(lambda: replies(page) and not streaming(page))
    assert speech_left(page) > 0
    assert page.find_element(By.ID, "stop").is_displayed()
    if how == "escape":
        await asyncio.to_thread(page.find_element(By.ID, "message").send_keys, Keys.ESCAPE)
    else:
        await asyncio.to_thread(page.find_element(By.ID, how).click)
    await until(lambda: speech_left(page) == 0)
    assert not page.find_element(By.ID, "stop").is_displayed()
    await asyncio.wait_for(audio.wait_until(lambda: audio.live_streams == 0), timeout(10))


# -- the sampling knobs ----------------------------------------------------------
async def test_an_empty_max_tokens_is_the_servers_default(start_server: Callable[..., Any], page: WebDriver) -> None:
    """Max tokens left empty is left out of the request (the server's default), not sent as 0."""
    server = await start_server()
    await open_page(page, server)
    await set_field(page, "max-tokens", "")
    await say(page, "Hail.")
    await until(lambda: replies(page) and not streaming(page))
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None


@pytest.mark.parametrize(
    ("field", "typed", "message"),
    [
        ("seed", "e", "Seed: a whole number from 0, or empty for a random one."),
        ("top-k", "-5", "Top k: a whole number from 0 (0 or empty: no limit)."),
        ("max-tokens", "0", "Max tokens: a whole number from 1, or empty for the server's default."),
    ],
)
async def test_a_knob_that_is_no_whole_number_is_marked_and_not_sent(
    start_server: Callable[..., Any], page: WebDriver, field: str, typed: str, message: str
) -> None:
    """A knob the server could not take (typed as the user would) is marked, says why, and nothing is sent: the line
    stays in the box."""
    server = await start_server()
    await open_page(page, server)
    box = page.find_element(By.ID, field)
    await asyncio.to_thread(box.clear)
    await asyncio.to_thread(box.send_keys, typed)
    await say(page, "Hail.")
    assert await until(lambda: page.find_element(By.ID, "error").text) == message
    assert box.get_attribute("aria-invalid") == "true"
    assert page.find_elements(By.CSS_SELECTOR, ".turn") == []
    assert page.find_element(By.ID, "message").get_attribute("value") == "Hail."
    await asyncio.to_thread(box.send_keys, Keys.BACKSPACE)  # typing in the field clears its mark
    assert box.get_attribute("aria-invalid") is None


async def test_a_seed_is_sent_as_typed_and_a_refusal_marks_it(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """A seed past 2**53 goes with its digits as typed (a JavaScript number would round it); the server's refusal,
    naming the seed, marks the field."""
    server = await start_server()
    await open_page(page, server)
    await set_field(page, "seed", "18446744073709551617")
    await say(page, "Hail.")
    error = await until(lambda: page.find_element(By.ID, "error").text)
    assert error.startswith("seed: ") and error.endswith("got 18446744073709551617"), error
    assert page.find_element(By.ID, "seed").get_attribute("aria-invalid") == "true"


async def test_a_blank_line_asks_for_a_message(start_server: Callable[..., Any], page: WebDriver) -> None:
    """A line of spaces is not sent: the box is marked and the page says what to do."""
    server = await start_server()
    await open_page(page, server)
    await say(page, "   ")
    assert await until(lambda: page.find_element(By.ID, "error").text) == "Type a message first."
    assert page.find_element(By.ID, "message").get_attribute("aria-invalid") == "true"
    assert page.find_elements(By.CSS_SELECTOR, ".turn") == []


async def test_right_to_left_text_lays_out_right_to_left(start_server: Callable[..., Any], page: WebDriver) -> None:
    """Hebrew typed in the box, and the line it makes, read right to left (dir="auto")."""
    server = await start_server()
    await open_page(page, server)
    await asyncio.to_thread(page.find_element(By.ID, "message").send_keys, "שלום לך")
    assert page.find_element(By.ID, "message").value_of_css_property("direction") == "rtl"
    await asyncio.to_thread(page.find_element(By.ID, "send").click)
    line = await until(lambda: page.find_elements(By.CSS_SELECTOR, ".turn.user .text"))
    assert line[0].value_of_css_property("direction") == "rtl"


# -- the connection, the page's own files ----------------------------------------
async def test_an_unreachable_server_is_said_plainly(start_server: Callable[..., Any], page: WebDriver) -> None:
    """A server gone after the page loaded: the page says it cannot reach it, not the browser's "Failed to fetch"."""
    server = await start_server()
    await open_page(page, server)
    await server.stop()
    await say(page, "Hail.")
    assert await until(lambda: page.find_element(By.ID, "error").text) == "Cannot reach the server (is it running?)"
    assert page.find_element(By.ID, "message").get_attribute("value") == "Hail."


CUT_AFTER_TWO_CHUNKS = """
    const original = window.fetch;
    window.fetch = async (url, options) => {
      const response = await original(url, options);
      if (!String(url).includes("/chat/")) return response;
      const reader = response.body.getReader();
      let chunks = 0;
      const body = new ReadableStream({
        async pull(controller) {
          const { value, done } = await reader.read();
          if (done || chunks++ >= 2) {
            reader.cancel();
            controller.error(new TypeError("network error"));  // what the browser says of a dropped connection
            return;
          }
          controller.enqueue(value);
        },
      });
      return new Response(body, { status: response.status, headers: response.headers });
    };
"""


async def test_a_reply_cut_by_the_connection_is_kept_and_marked(
    start_server: Callable[..., Any], page: WebDriver, tiny_text_model: Any
) -> None:
    """A connection lost in the middle of a reply keeps what came, marked as cut off, in the conversation."""
    server = await start_server(stream_buffer=1)
    slowed(server.models.text["tiny"])
    await open_page(page, server)
    await asyncio.to_thread(page.execute_script, CUT_AFTER_TWO_CHUNKS)
    await set_field(page, "seed", str(long_reply_seed(tiny_text_model, "Speak on.")))
    await say(page, "Speak on.")
    note = await until(lambda: page.find_elements(By.CSS_SELECTOR, ".turn.assistant .note"))
    assert note[0].text == "cut off: the connection was lost"
    kept = replies(page)[0]
    assert kept
    assert conversation(page) == [{"role": "user", "content": "Speak on."}, {"role": "assistant", "content": kept}]
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None


async def test_the_page_loads_without_a_console_error(start_server: Callable[..., Any], page: WebDriver) -> None:
    """The page asks for nothing the server lacks (no favicon.ico): its console stays free of errors."""
    server = await start_server()
    console_errors(page)
    await open_page(page, server)
    await asyncio.sleep(0.3)
    assert console_errors(page) == []


async def test_a_reload_keeps_the_conversation_and_the_knobs(start_server: Callable[..., Any], page: WebDriver) -> None:
    """A reload brings back the tab's conversation and sampling knobs; New chat forgets the conversation."""
    server = await start_server()
    await open_page(page, server)
    await set_field(page, "max-tokens", "8")
    await asyncio.to_thread(page.find_element(By.ID, "seed").send_keys, "42")
    await say(page, "Hail.")
    await until(lambda: replies(page) and not streaming(page))
    before = conversation(page)
    await open_page(page, server)
    assert conversation(page) == before
    assert [e.text for e in page.find_elements(By.CSS_SELECTOR, ".turn .text")] == [m["content"] for m in before]
    assert page.find_element(By.ID, "seed").get_attribute("value") == "42"
    await asyncio.to_thread(page.find_element(By.ID, "new-chat").click)
    await open_page(page, server)
    assert conversation(page) == []
    assert page.find_elements(By.CSS_SELECTOR, ".turn") == []


# -- hostile pages ----------------------------------------------------------------
HTML = '<img src=x onerror="window.pwned = 1">'
# The API answering with HTML where the page shows text: a persona's name in the model list, a reply's text.
HOSTILE_ANSWERS = """
    const html = arguments[0];
    window.fetch = async (url) => {
      const headers = { "Content-Type": String(url).includes("/chat/") ? "text/event-stream" : "application/json" };
      if (String(url).includes("/v1/models")) {
        const data = [{ id: `tiny/${html}`, object: "model", kind: "text" }];
        return new Response(JSON.stringify({ object: "list", data }), { headers });
      }
      const delta = (content, finish) => ({ choices: [{ index: 0, delta: { content }, finish_reason: finish }] });
      const events = [delta(html, null), delta("", "stop")].map((e) => `data: ${JSON.stringify(e)}\\n\\n`);
      return new Response(events.join("") + "data: [DONE]\\n\\n", { headers });
    };
    document.getElementById("api-key").dispatchEvent(new Event("change"));  // lists the models again
"""


async def test_html_in_a_message_a_name_or_a_reply_is_shown_as_text(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """A line, a persona's name and a reply holding HTML are shown as their text: no element made, no handler run,
    after a reload too."""
    server = await start_server()
    await open_page(page, server)
    await asyncio.to_thread(page.execute_script, HOSTILE_ANSWERS, HTML)
    await until(lambda: page.find_element(By.ID, "model").get_attribute("value") == f"tiny/{HTML}")
    await say(page, HTML)
    await until(lambda: replies(page) and not streaming(page))
    for reload in (False, True):
        if reload:
            await asyncio.to_thread(page.refresh)
            await until(lambda: page.find_elements(By.CSS_SELECTOR, ".turn"))
        texts = [e.text for e in page.find_elements(By.CSS_SELECTOR, ".turn .text")]
        assert texts == [HTML, HTML]
        assert page.find_elements(By.CSS_SELECTOR, ".turn.assistant .speaker")[0].text.startswith("<Img Src=X")
        assert page.find_elements(By.CSS_SELECTOR, "img:not([id])") == []
        assert page.execute_script("return window.pwned") is None


async def test_the_page_runs_no_inline_script(start_server: Callable[..., Any], page: WebDriver) -> None:
    """Its Content-Security-Policy refuses inline script: HTML that made its way into the page runs no handler."""
    server = await start_server()
    await open_page(page, server)
    console_errors(page)
    await asyncio.to_thread(page.execute_script, "document.body.insertAdjacentHTML('beforeend', arguments[0])", HTML)
    await asyncio.sleep(0.3)
    assert page.execute_script("return window.pwned") is None
    assert any("Content Security Policy" in line for line in console_errors(page))


async def test_a_rebound_name_gets_neither_the_page_nor_the_api(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """A site whose name the browser resolves to 127.0.0.1 (DNS rebinding) is refused the page and every answer:
    same-origin with the server, it could read them all."""
    server = await start_server()
    port = server.http_port
    for path in ("/", "/v1/models"):
        await asyncio.to_thread(page.get, f"http://{REBOUND}:{port}{path}")
        body = page.find_element(By.TAG_NAME, "body").text
        assert f"Host {REBOUND}:{port} is not a name of this server" in body


# A page's WebSocket to the server's WebSocket port: "open" or "refused".
OPEN_WEBSOCKET = """
    const done = arguments[arguments.length - 1];
    const ws = new WebSocket(arguments[0]);
    ws.onopen = () => { ws.close(); done("open"); };
    ws.onerror = () => done("refused");
"""


async def test_a_page_of_another_site_cannot_open_the_websocket(
    start_server: Callable[..., Any], page: WebDriver
) -> None:
    """A page of another origin (localhost, calling 127.0.0.1) cannot open the WebSocket; a page of the server's
    own host (on its HTTP port) can. The pages are /healthz, which has no Content-Security-Policy: the chat page's
    own (connect-src 'self') would stop both."""
    server = await start_server()
    url = f"ws://{server.ws_address}/"
    await asyncio.to_thread(page.get, f"http://localhost:{server.http_port}/healthz")
    assert await asyncio.to_thread(page.execute_async_script, OPEN_WEBSOCKET, url) == "refused"
    await asyncio.to_thread(page.get, f"http://{server.http_address}/healthz")
    assert await asyncio.to_thread(page.execute_async_script, OPEN_WEBSOCKET, url) == "open"
    console_errors(page)  # the refused handshake's line


# -- the phone ------------------------------------------------------------------
async def test_the_chat_fits_a_phone(start_server: Callable[..., Any], page: WebDriver) -> None:
    """On a 390 px wide phone the chat fits: no sideways scroll, every tool and Send on the screen."""
    server = await start_server(audio={"max_text_chars": 200, "max_seconds": 5.0})
    metrics = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    await asyncio.to_thread(page.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", metrics)
    try:
        await open_page(page, server)
        assert page.execute_script("return document.documentElement.scrollWidth") <= 390
        for control in ("model", "speak-switch", "new-chat", "message", "send"):
            box = "document.getElementById(arguments[0]).getBoundingClientRect()"
            left, right = page.execute_script(f"const box = {box}; return [box.left, box.right]", control)
            assert left >= 0 and right <= 390, (control, left, right)
    finally:
        await asyncio.to_thread(page.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
