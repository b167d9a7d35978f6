"""Browser fixtures: a live server per test, Debian's Chromium through Playwright's sync API.

Every test here is marked ``browser``; all are skipped, with the reason, when
``/usr/bin/chromium`` is missing or Playwright cannot launch it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser
from playwright.sync_api import BrowserContext
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from tests.conftest import dispose
from tests.conftest import make_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where ``shot`` saves full-page screenshots (git-ignored).
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
#: How long any one wait (a click, a navigation, an expect) may take before the test fails.
TIMEOUT_MS = 10_000
VIEWPORT = {"width": 1100, "height": 720}

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e ``browser``."""
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole session."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser tests skipped")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
        except PlaywrightError as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            pytest.skip(f"Playwright cannot launch {CHROMIUM}: {first_line}")
        yield browser
        browser.close()


@contextmanager
def serve(tmp_path: Path) -> Iterator[str]:
    """Serve a fresh app (admin and user accounts, default policy) on a free port; its base URL."""
    app = make_app(tmp_path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="live-server", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        dispose(app)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """The app served for one test; its base URL."""
    with serve(tmp_path) as base:
        yield base


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """Open pages in fresh contexts (separate cookies: separate visitors); all closed after."""
    contexts: list[BrowserContext] = []

    def open_page() -> Page:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[[], Page]) -> Page:
    """A page in a context of its own."""
    return new_page()


def login(page: Page, base: str, email: str, password: str) -> None:
    """Log in through the form on /login and wait for the page it leads to."""
    page.goto(f"{base}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as tests/screenshots/<name>.png and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
