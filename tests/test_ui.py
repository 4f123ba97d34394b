"""The web UI in a real browser (Playwright + Debian's Chromium) against the real server."""
from __future__ import annotations

import re

import pytest
import requests
from ui_support import csrf_of, login_with_token, session_cookies, shot

pytestmark = pytest.mark.ui


def test_unauthenticated_page_redirects_to_login_and_back(anon_page, server):
    page = anon_page
    page.goto("/")
    assert re.search(r"/login\?next=%2F$", page.url), page.url
    shot(page, "login")
    login_with_token(page, server.token, next_path="%2F")
    assert page.url == server.url + "/"
    assert page.locator(".user-name").inner_text() == "admin"
    assert page.locator("nav.sidebar a.nav-compute").is_visible()
    assert page.console_errors == []
    shot(page, "home")


def test_wrong_token_is_refused(anon_page, server):
    page = anon_page
    login_with_token(page, "dapi" + "f" * 32)
    assert "/login" in page.url
    assert "Invalid or expired access token" in page.locator("#login-error").inner_text()
    assert "by_session" not in session_cookies(page)


def test_session_cookie_flags_and_logout(page, server):
    cookie = next(c for c in page.context.cookies() if c["name"] == "by_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
    sid = cookie["value"]
    # The cookie is a session for pages, never a credential for the REST API.
    r = requests.get(server.url + "/api/2.0/clusters/list", cookies={"by_session": sid}, timeout=30)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    assert requests.get(server.url + "/", cookies={"by_session": sid}, allow_redirects=False,
                        timeout=30).status_code == 200
    with page.expect_navigation():
        page.click("#logout")
    assert "/login" in page.url
    assert "You are signed out." in page.content()
    # The old cookie no longer opens anything.
    r = requests.get(server.url + "/", cookies={"by_session": sid}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_logout_without_csrf_token_is_refused(page, server):
    sid = session_cookies(page)["by_session"]
    r = requests.post(server.url + "/logout", cookies={"by_session": sid}, data={}, allow_redirects=False,
                      timeout=30)
    assert r.status_code == 403 and "Request refused" in r.text
    r = requests.post(server.url + "/logout", cookies={"by_session": sid}, data={"csrf_token": "x" * 43},
                      allow_redirects=False, timeout=30)
    assert r.status_code == 403
    # A valid token from another origin is refused too.
    r = requests.post(server.url + "/logout", cookies={"by_session": sid}, data={"csrf_token": csrf_of(page)},
                      headers={"Origin": "http://evil.example"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403
    # Still signed in.
    assert requests.get(server.url + "/", cookies={"by_session": sid}, allow_redirects=False,
                        timeout=30).status_code == 200


def test_next_must_be_a_local_path(anon_page, server):
    page = anon_page
    login_with_token(page, server.token, next_path="https%3A%2F%2Fevil.example%2F")
    assert page.url == server.url + "/"
    page.goto("/login?next=%2F%2Fevil.example%2Fx")  # signed in: straight to the (checked) target
    assert page.url == server.url + "/"


def test_pages_carry_security_headers(page, server):
    response = page.goto("/")
    headers = response.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "SAMEORIGIN"
    assert headers["cache-control"] == "no-store"
