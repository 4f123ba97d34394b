"""Web UI tests: Playwright driving the system Chromium against the real `server` fixture.

Fixtures (imported by conftest.py): `browser` (one Chromium per session), `anon_page` (a fresh
browser context, nobody signed in), `page` (a fresh context signed in as the admin through
the login form, with the admin's token). Helpers: `login_with_token`, `login_with_password`,
`shot(page, name)` (a full-page screenshot under tests/artifacts/ui/), `csrf_of(page)`.
No browser is downloaded: CHROMIUM (default /usr/bin/chromium) is Debian's package, which
`./dev setup` installs when it is missing.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "ui"
CHROMIUM = os.environ.get("BRICKYARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run ./dev setup (installs Debian's chromium) or set "
                    "BRICKYARD_TEST_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def _new_page(browser, server):  # noqa: ANN001, ANN202
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    return context, page


@pytest.fixture
def anon_page(browser, server):
    context, page = _new_page(browser, server)
    yield page
    context.close()


@pytest.fixture
def page(browser, server):
    context, page = _new_page(browser, server)
    login_with_token(page, server.token)
    yield page
    context.close()


def login_with_token(page, token: str, next_path: str | None = None) -> None:  # noqa: ANN001
    """Sign in on the login page the browser is on (after a redirect), or open /login?next=next_path."""
    if next_path is not None or "/login" not in page.url:
        page.goto("/login?next=" + (next_path or "%2F"))
    page.click("a[data-tab=token]")
    page.fill("#login-token input[name=token]", token)
    with page.expect_navigation():
        page.click("#login-token button[type=submit]")


def login_with_password(page, user_name: str, password: str) -> None:  # noqa: ANN001
    if "/login" not in page.url:
        page.goto("/login")
    page.fill("#login-password input[name=username]", user_name)
    page.fill("#login-password input[name=password]", password)
    with page.expect_navigation():
        page.click("#login-password button[type=submit]")


def csrf_of(page) -> str:  # noqa: ANN001
    """The CSRF token of the signed-in page (the body's hx-headers)."""
    headers = page.get_attribute("body", "hx-headers") or ""
    match = re.search(r'"X-CSRF-Token":\s*"([^"]+)"', headers)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def session_cookies(page) -> dict:  # noqa: ANN001
    return {c["name"]: c["value"] for c in page.context.cookies()}


def shot(page, name: str) -> Path:  # noqa: ANN001
    """Save a full-page screenshot as tests/artifacts/ui/<name>.png (a test artifact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
