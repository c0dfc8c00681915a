"""The chat page's Images tab in a real headless Chromium against a real server on port 0 serving the committed image
models (models/image: the RBM's 8x8 digits, the DCGAN's 28x28 Fashion-MNIST, the Deep Dream evaluator): frames as
they arrive, the final image and its download, Stop, a refusal naming its field, a latent walk, Deep Dream on an
uploaded PNG, the API key, the tabs."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from server.app import Server
from server.engine.image import ImageEngine, ImageLimits
from server.engine.text import TextEngine
from tests.conftest import timeout
from tests.server.transport.test_page import chromium, fresh_storage, set_field, until  # noqa: F401 (autouse)

IMAGE_MODELS = Path(__file__).resolve().parents[3] / "models" / "image"
KEY = "sk-images/key+1"
STEP_S = 0.01  # each Gibbs step of a slowed chain waits this long, so its frames arrive apart
StartServer = Callable[..., Any]


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    """One headless Chromium for the module, saving downloads into ``downloads``."""
    driver = chromium()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


@pytest.fixture
def start_server(serve_engines: Callable[..., Awaitable[Server]]) -> StartServer:
    """``await start_server(*families, text=None, settings=None, **image_limits)``: a server on free ports serving
    the committed image models named (and ``text``, a text engine, if given); stopped after the test."""

    async def start(
        *families: str, text: TextEngine | None = None, settings: dict[str, Any] | None = None, **limits: Any
    ) -> Server:
        engines = [
            ImageEngine.from_checkpoint(IMAGE_MODELS / f"{family}.safetensors", family, ImageLimits(**limits))
            for family in families
        ]
        return await serve_engines(text=[text] if text else [], images=engines, settings=settings)

    return start


def slowed(engine: ImageEngine, seconds: float) -> None:
    """Each Gibbs step of the engine's chains takes ``seconds`` longer (on its worker thread), so a chain is seen
    running; the steps themselves are the model's."""
    sampler: Any = engine.sampler
    chains = sampler.chains

    def slow(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for frame in chains(*args, **kwargs):
            time.sleep(seconds)
            yield frame

    sampler.chains = slow


async def open_images(page: WebDriver, server: Server) -> None:
    """The page, once its Images tab shows a model to pick."""
    await asyncio.to_thread(page.get, f"http://{server.http_address}/")
    await until(lambda: page.find_element(By.ID, "image-form").is_displayed() and image_options(page))


def image_options(page: WebDriver) -> list[str]:
    return [o.text for o in page.find_elements(By.CSS_SELECTOR, "#image-model option")]


def frames_drawn(page: WebDriver) -> list[dict[str, Any]]:
    return page.execute_script("return window.antiphonImages.log")


async def generate(page: WebDriver) -> None:
    await asyncio.to_thread(page.find_element(By.ID, "image-generate").click)


async def finished(page: WebDriver) -> list[dict[str, Any]]:
    """The frames drawn, once the last one is."""
    return await until(lambda: (log := frames_drawn(page)) and log[-1]["final"] and log)


def png_pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode == "L"
    return np.asarray(image)


def no_alert(page: WebDriver) -> bool:
    try:
        page.switch_to.alert  # noqa: B018 (the property raises where no alert is open)
    except NoAlertPresentException:
        return True
    return False


@pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)
async def test_the_images_tab_sits_beside_the_chat_and_takes_the_keyboard(
    start_server: StartServer, page: WebDriver, make_text_engine: Callable[..., TextEngine]
) -> None:
    """With text and image models served, the page opens on Chat with an Images tab beside it; the arrow key moves
    to it, it lists each image model with its family, and Enter in the form generates."""
    server = await start_server("rbm", "dcgan", "evaluator", text=make_text_engine())
    await asyncio.to_thread(page.get, f"http://{server.http_address}/")
    await until(lambda: page.find_element(By.ID, "tabs").is_displayed())
    assert page.find_element(By.ID, "tab-chat").get_attribute("aria-selected") == "true"
    assert page.find_element(By.ID, "composer").is_displayed()
    await asyncio.to_thread(page.find_element(By.ID, "tab-chat").send_keys, Keys.ARROW_RIGHT)
    await until(lambda: page.find_element(By.ID, "images-panel").is_displayed())
    assert page.switch_to.active_element == page.find_element(By.ID, "tab-images")
    assert page.find_element(By.ID, "tab-images").get_attribute("aria-selected") == "true"
    assert not page.find_element(By.ID, "composer").is_displayed()
    assert not page.find_element(By.ID, "chat-tools").is_displayed()
    assert image_options(page) == ["rbm (RBM)", "dcgan (DCGAN)", "evaluator (Deep Dream)"]
    assert page.find_element(By.ID, "image-about").text.startswith("RBM: Bernoulli RBM, one frame per block Gibbs")
    await asyncio.to_thread(page.find_element(By.ID, "image-seed").send_keys, "5" + Keys.ENTER)
    assert (await finished(page))[-1]["model"] == "rbm"


async def test_a_chain_shows_its_frames_as_they_arrive(start_server: StartServer, page: WebDriver) -> None:
    """Generate on the RBM draws the chain's frames one after another, steps rising, then the last: the viewer,
    the caption, the frames strip and the history show it."""
    server = await start_server("rbm")
    slowed(server.models.images["rbm"], STEP_S)
    await open_images(page, server)
    await set_field(page, "image-seed", "11")
    await set_field(page, "image-steps", "40")
    await generate(page)
    log = await finished(page)
    assert [(f["step"], f["final"]) for f in log] == [(9, False), (19, False), (29, False), (39, True)]
    arrived = [f["at"] for f in log]
    assert arrived == sorted(set(arrived)), arrived  # drawn one by one, as they arrived
    caption = page.find_element(By.ID, "image-caption").text
    assert caption.startswith("rbm · seed 11: Gibbs step 40 of 40, done in ")
    assert len(page.find_elements(By.CSS_SELECTOR, "#image-frames li")) == 4
    assert len(page.find_elements(By.CSS_SELECTOR, "#image-history li")) == 1
    view = page.find_element(By.ID, "image-view")
    assert view.is_displayed()
    side = server.models.images["rbm"].info.image_size  # shown at the largest whole scale that fits 288 pixels
    shown = [side, side * (288 // side)]
    assert page.execute_script("return [arguments[0].naturalWidth, arguments[0].clientWidth]", view) == shown
    assert view.value_of_css_property("image-rendering") == "pixelated"


async def test_the_final_image_downloads_as_the_servers_png(
    start_server: StartServer, page: WebDriver, downloads: Path
) -> None:
    """A DCGAN image of a class picked by name, once made, downloads as the PNG the server makes for that class and
    seed."""
    server = await start_server("dcgan")
    await open_images(page, server)
    await asyncio.to_thread(Select(page.find_element(By.ID, "image-class")).select_by_visible_text, "Sneaker")
    await set_field(page, "image-seed", "7")
    await generate(page)
    await finished(page)
    link = page.find_element(By.ID, "image-download")
    assert link.get_attribute("download") == "dcgan-sneaker-seed7.png"
    await asyncio.to_thread(link.click)
    saved = downloads / "dcgan-sneaker-seed7.png"
    await until(saved.exists)
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(30)) as http:
        answer = await http.post("/v1/images/generations", json={"model": "dcgan", "prompt": "sneaker", "seed": 7})
    expected = base64.b64decode(answer.json()["data"][0]["b64_json"])
    assert png_pixels(saved.read_bytes()).shape == (28, 28)
    assert saved.read_bytes() == expected


async def test_stop_cancels_the_chain(start_server: StartServer, page: WebDriver) -> None:
    """Stop aborts a running chain: the server's slot is free again, the page says so and can generate again."""
    server = await start_server("rbm")
    engine = server.models.images["rbm"]
    slowed(engine, 0.02)
    await open_images(page, server)
    await set_field(page, "image-steps", "1000")
    await generate(page)
    await until(lambda: engine.live_streams == 1 and page.find_element(By.ID, "image-stop").is_displayed())
    await asyncio.to_thread(page.find_element(By.ID, "image-stop").click)
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
    stopped = "Stopped before the first frame."  # the first partial image would be step 250's
    await until(lambda: page.find_element(By.ID, "image-empty").text == stopped)
    assert page.find_element(By.ID, "image-generate").is_enabled()
    assert page.find_elements(By.CSS_SELECTOR, "#image-history li") == []
    assert page.find_element(By.ID, "image-error").get_attribute("hidden") is not None


async def test_a_refused_field_is_named_inline(start_server: StartServer, page: WebDriver) -> None:
    """A request the server refuses shows its message beside the viewer, not in an alert, and marks the field the
    server named."""
    server = await start_server("rbm")
    await open_images(page, server)
    await set_field(page, "image-steps", "5000")
    await generate(page)
    error = await until(lambda: page.find_element(By.ID, "image-error").text)
    assert error == "steps: must be 0 (50) or 1..1000, got 5000"
    assert page.find_element(By.ID, "image-steps").get_attribute("aria-invalid") == "true"
    assert no_alert(page)
    assert frames_drawn(page) == []


async def test_every_0th_frame_is_every_frame_and_a_refusal_after_frees_the_form(
    start_server: StartServer, page: WebDriver
) -> None:
    """Every Nth frame 0 (the server's "every frame") shows each step in turn; a refused request after it shows its
    message and leaves Generate ready, Stop hidden."""
    server = await start_server("rbm")
    await open_images(page, server)
    await set_field(page, "image-steps", "5")
    await set_field(page, "image-every", "0")
    await set_field(page, "image-seed", "3")
    await generate(page)
    log = await finished(page)
    assert [(f["step"], f["final"]) for f in log] == [(0, False), (1, False), (2, False), (3, False), (4, True)]
    assert page.find_element(By.ID, "image-caption").text.startswith("rbm · seed 3: Gibbs step 5 of 5, done in ")
    assert page.execute_script("return document.getElementById('image-progress').value") == 5
    await set_field(page, "image-steps", "5000")
    await generate(page)
    assert (await until(lambda: page.find_element(By.ID, "image-error").text)).startswith("steps: ")
    await until(lambda: page.find_element(By.ID, "image-generate").is_enabled())
    assert not page.find_element(By.ID, "image-stop").is_displayed()


async def test_a_walk_shows_its_points_as_they_arrive(start_server: StartServer, page: WebDriver) -> None:
    """Latent walk on the DCGAN streams every point from one seed to the other, each drawn as it arrives and
    captioned by its point; the download is named after both seeds."""
    server = await start_server("dcgan")
    await open_images(page, server)
    assert not page.find_element(By.ID, "image-walk-to").is_displayed()
    await asyncio.to_thread(page.find_element(By.ID, "image-walk").click)
    await asyncio.to_thread(Select(page.find_element(By.ID, "image-class")).select_by_visible_text, "Bag")
    await set_field(page, "image-seed", "2")
    await set_field(page, "image-walk-to", "9")
    await set_field(page, "image-walk-frames", "6")
    await generate(page)
    log = await finished(page)
    assert [(f["step"], f["final"]) for f in log] == [
        (0, False),
        (1, False),
        (2, False),
        (3, False),
        (4, False),
        (5, True),
    ]
    assert page.find_element(By.ID, "image-caption").text.startswith("dcgan · Bag · seed 2 → 9: point 6 of 6, done in ")
    assert len(page.find_elements(By.CSS_SELECTOR, "#image-frames li")) == 6
    assert page.find_element(By.ID, "image-download").get_attribute("download") == "dcgan-bag-seed2-to9-6frames.png"


async def test_deep_dream_on_an_uploaded_png_every_nth_step(
    start_server: StartServer, page: WebDriver, tmp_path: Path
) -> None:
    """Deep Dream on a PNG uploaded in the form, toward a class on the logits layer, every 2nd step: the frames of
    steps 0 and 2 as they arrive, then the last, the same image the server makes of that photo through its API."""
    server = await start_server("evaluator", dream_size=32)
    await open_images(page, server)
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((30, 40)) * 255).astype(np.uint8)).save(photo)
    assert page.find_element(By.ID, "image-note").text.startswith("Each frame is one gradient step of the dream")
    await asyncio.to_thread(page.find_element(By.ID, "image-file").send_keys, str(photo))
    await until(lambda: page.find_element(By.ID, "image-file-preview").is_displayed())
    assert image_options(page) == ["evaluator (Deep Dream)"]
    layers = [o.text for o in page.find_elements(By.CSS_SELECTOR, "#image-layer option")]
    assert layers == ["block1", "block2", "hidden", "logits"]
    assert not page.find_element(By.ID, "image-target").is_displayed()
    await asyncio.to_thread(Select(page.find_element(By.ID, "image-layer")).select_by_value, "logits")
    await asyncio.to_thread(Select(page.find_element(By.ID, "image-target")).select_by_visible_text, "Bag")
    await set_field(page, "image-octaves", "1")
    await set_field(page, "image-steps", "4")
    await set_field(page, "image-every", "2")
    await set_field(page, "image-seed", "5")
    await generate(page)
    log = await finished(page)
    assert [(f["step"], f["final"]) for f in log] == [(0, False), (2, False), (3, True)]
    caption = page.find_element(By.ID, "image-caption").text
    assert caption.startswith("evaluator · toward Bag · seed 5: dream step 4 of 4, done in ")
    shown = page.execute_script("return arguments[0].src", page.find_element(By.ID, "image-view"))
    fields = {"model": "evaluator", "prompt": "Bag", "octaves": "1", "steps": "4", "seed": "5"}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(30)) as http:
        answer = await http.post("/v1/images/edits", data=fields, files={"image": ("p.png", photo.read_bytes())})
    assert shown == "data:image/png;base64," + answer.json()["data"][0]["b64_json"]


async def test_a_dream_without_an_image_names_the_file_field(start_server: StartServer, page: WebDriver) -> None:
    """Generate on Deep Dream with no image chosen: the server's refusal shows inline and marks the file field."""
    server = await start_server("evaluator", dream_size=32)
    await open_images(page, server)
    await generate(page)
    error = await until(lambda: page.find_element(By.ID, "image-error").text)
    assert error == "image: upload exactly one image to dream on, PNG or JPEG (got 0)"
    assert page.find_element(By.ID, "image-file").get_attribute("aria-invalid") == "true"
    assert frames_drawn(page) == []


async def test_with_a_key_the_images_tab_opens_and_generates(start_server: StartServer, page: WebDriver) -> None:
    """A server with a key: the page asks for it; with it, the image models are listed (an images-only server opens
    on the Images tab) and an image is made."""
    server = await start_server("dcgan", settings={"api_key": KEY})
    await asyncio.to_thread(page.get, f"http://{server.http_address}/")
    error = await until(lambda: page.find_element(By.ID, "error").text)
    assert error == "Cannot list the models: This server needs an API key: enter it under Access."
    assert not page.find_element(By.ID, "tabs").is_displayed()
    await asyncio.to_thread(page.find_element(By.ID, "api-key").send_keys, KEY + "\n")
    await until(lambda: page.find_element(By.ID, "image-form").is_displayed() and image_options(page))
    assert not page.find_element(By.ID, "tab-chat").is_displayed()
    await generate(page)
    log = await finished(page)
    assert [(f["model"], f["final"]) for f in log] == [("dcgan", True)]
    assert page.find_element(By.ID, "image-error").get_attribute("hidden") is not None
