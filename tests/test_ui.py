"""The web UI in a real browser (Playwright + Debian's Chromium) against the real server."""
from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import expect
from ui_support import csrf_of, login_with_password, login_with_token, session_cookies, shot

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


def test_revoking_the_sign_in_token_ends_the_session(anon_page, server, w, unique):
    created = w.tokens.create(comment=unique("ui-session"), lifetime_seconds=3600)
    login_with_token(anon_page, created.token_value)
    assert "/login" not in anon_page.url
    sid = session_cookies(anon_page)["by_session"]
    assert requests.get(server.url + "/", cookies={"by_session": sid}, allow_redirects=False,
                        timeout=30).status_code == 200
    w.tokens.delete(created.token_info.token_id)
    r = requests.get(server.url + "/", cookies={"by_session": sid}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    anon_page.reload()
    assert "/login" in anon_page.url


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


# -- secret scopes ------------------------------------------------------------------------------

def _create_scope_in_form(page, name: str, manage: str = "creator", dns: str = "", resource: str = "") -> None:
    page.fill("#create-scope-form input[name=scope]", name)
    page.select_option("#create-scope-form select[name=manage]", manage)
    page.fill("#create-scope-form input[name=dns_name]", dns)
    page.fill("#create-scope-form input[name=resource_id]", resource)
    with page.expect_navigation():
        page.click("#create-scope-form button[type=submit]")


def test_hash_route_create_scope_after_login(anon_page, server, w, unique):
    page = anon_page
    page.goto("/#secrets/createScope")
    assert "/login" in page.url
    login_with_token(page, server.token)
    page.wait_for_url("**/secrets/createScope")
    shot(page, "secrets-create-scope")
    scope = unique("uiscope")
    _create_scope_in_form(page, scope)
    assert page.url == server.url + "/secrets"
    assert f"Secret scope {scope} created." in page.locator(".flash-success").inner_text()
    shot(page, "secrets-list")
    scopes = {s.name: s for s in w.secrets.list_scopes()}
    assert scopes[scope].backend_type.value == "DATABRICKS"
    assert [a.principal for a in w.secrets.list_acls(scope)] == ["admin"]

    value = "s3cr3t-" + unique("v")
    w.secrets.put_secret(scope, "storage_key", string_value=value)
    page.click(f"a.scope-link:text-is('{scope}')")
    page.wait_for_url(f"**/secrets/scopes/{scope}")
    assert page.locator("#keys td.secret-key").all_inner_texts() == ["storage_key"]
    assert value not in page.content()
    assert page.locator("#acls td.acl-principal").all_inner_texts() == ["admin"]
    shot(page, "secrets-scope")

    # ACLs from the page: grant READ to users, then remove it.
    page.fill("#add-acl input[name=principal]", "users")
    page.select_option("#add-acl select[name=permission]", "READ")
    with page.expect_navigation():
        page.click("#add-acl button[type=submit]")
    assert {a.principal: a.permission.value for a in w.secrets.list_acls(scope)} == {"admin": "MANAGE",
                                                                                    "users": "READ"}
    page.on("dialog", lambda d: d.accept())
    row = page.locator("#acls tr", has=page.locator("td.acl-principal", has_text="users"))
    with page.expect_navigation():
        row.locator("button").click()
    assert [a.principal for a in w.secrets.list_acls(scope)] == ["admin"]


def test_hash_route_with_workspace_id(page, server, w, unique):
    wid = server.workspace.workspace_id
    page.goto(f"/?o={wid}#secrets/createScope")
    page.wait_for_url("**/secrets/createScope")
    scope = unique("uiscope-all")
    _create_scope_in_form(page, scope, manage="users")
    assert {a.principal: a.permission.value for a in w.secrets.list_acls(scope)} == {"users": "MANAGE"}


HASH_ROUTES = [
    ("#secrets", "/secrets"),
    ("#joblist", "/jobs"),
    ("#job/123/run/456", "/jobs/123/runs/456"),
    ("#setting/clusters", "/compute"),
    ("#setting/clusters/0101-abc/configuration", "/compute/0101-abc"),
    ("#create/cluster", "/compute/create"),
    ("#workspace/Users/admin/samples", "/workspace?path=%2FUsers%2Fadmin%2Fsamples"),
    ("#mlflow/experiments/7", "/ml/#/experiments/7"),
    ("#setting/account", "/settings/tokens"),
]


def test_databricks_hash_routes(page, server):
    for hash_route, path in HASH_ROUTES:
        page.goto("/" + hash_route)  # a new page load, or a hash change on the root page
        page.wait_for_url(server.url + path)
    page.goto("/")
    page.goto("/#secrets/createScope")  # same document: only the hash changes
    page.wait_for_url(server.url + "/secrets/createScope")


def test_create_azure_key_vault_scope_in_form(page, server, w, unique):
    page.goto("/secrets/createScope")
    scope = unique("uiakv")
    # One of the two Key Vault fields alone is refused, the form comes back filled in.
    _create_scope_in_form(page, scope, dns="https://uivault.vault.azure.net/")
    assert "needs both" in page.locator("#form-error").inner_text()
    assert page.input_value("#create-scope-form input[name=scope]") == scope
    rid = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/uivault"
    _create_scope_in_form(page, scope, dns="https://uivault.vault.azure.net/", resource=rid)
    info = {s.name: s for s in w.secrets.list_scopes()}[scope]
    assert info.backend_type.value == "AZURE_KEYVAULT"
    assert info.keyvault_metadata.dns_name == "https://uivault.vault.azure.net/"
    assert info.keyvault_metadata.resource_id == rid
    row = page.locator("#scopes tr", has=page.locator("a.scope-link", has_text=scope))
    assert "Azure Key Vault" in row.inner_text()
    # A name that exists already: the service's message on the page, not JSON.
    page.goto("/secrets/createScope")
    _create_scope_in_form(page, scope)
    assert "already exists" in page.locator("#form-error").inner_text()


def test_csrf_refusal_creates_nothing(page, server, w, unique):
    sid = session_cookies(page)["by_session"]
    url = server.url + "/secrets/createScope"
    for data in ({"scope": unique("nocsrf")}, {"scope": unique("badcsrf"), "csrf_token": "A" * 43}):
        r = requests.post(url, cookies={"by_session": sid}, data=data, allow_redirects=False, timeout=30)
        assert r.status_code == 403 and "Request refused" in r.text, r.text
        assert data["scope"] not in {s.name for s in w.secrets.list_scopes()}
    # The page's own token works (the same request a browser form sends).
    scope = unique("okcsrf")
    r = requests.post(url, cookies={"by_session": sid}, data={"scope": scope, "csrf_token": csrf_of(page)},
                      allow_redirects=False, timeout=30)
    assert r.status_code == 303 and scope in {s.name for s in w.secrets.list_scopes()}
    # The sign-in form is protected too (login CSRF): a post without the form's nonce is refused.
    other = requests.post(server.url + "/login", data={"method": "token", "token": server.token},
                          allow_redirects=False, timeout=30)
    assert other.status_code == 403 and "by_session" not in other.cookies
    # A refused page in the browser.
    page.goto("/secrets/createScope")
    page.evaluate("document.querySelector('#create-scope-form input[name=csrf_token]').value = 'forged'")
    _create_scope_in_form(page, unique("forged"))
    assert "Request refused" in page.content()
    shot(page, "csrf-refused")


# -- tokens -------------------------------------------------------------------------------------

def test_generate_use_and_revoke_token(page, server, unique):
    page.goto("/settings/tokens")
    comment = unique("ui-token")
    page.fill("#generate-token input[name=comment]", comment)
    page.fill("#generate-token input[name=lifetime_days]", "1")
    with page.expect_navigation():
        page.click("#generate-token button[type=submit]")
    value = page.input_value("#token-value")
    assert re.fullmatch(r"dapi[0-9a-f]{32}", value)
    page.click("#copy-token")
    expect(page.locator("#copy-token")).to_have_text("Copied")
    shot(page, "settings-token-generated")
    r = requests.get(server.url + "/api/2.0/clusters/list", headers={"Authorization": f"Bearer {value}"},
                     timeout=30)
    assert r.status_code == 200, r.text
    # Shown once: the list never carries the value.
    page.goto("/settings/tokens")
    assert value not in page.content()
    row = page.locator("#tokens tr", has=page.locator("td.token-comment", has_text=comment))
    assert row.count() == 1
    shot(page, "settings-tokens")
    page.on("dialog", lambda d: d.accept())
    with page.expect_navigation():
        row.locator("button.revoke").click()
    assert "Token revoked." in page.locator(".flash-success").inner_text()
    assert page.locator("#tokens tr", has=page.locator("td.token-comment", has_text=comment)).count() == 0
    r = requests.get(server.url + "/api/2.0/clusters/list", headers={"Authorization": f"Bearer {value}"},
                     timeout=30)
    assert r.status_code == 401


def test_token_lifetime_is_checked(page):
    page.goto("/settings/tokens")
    page.evaluate("document.querySelector('#generate-token input[name=lifetime_days]').removeAttribute('min')")
    page.fill("#generate-token input[name=lifetime_days]", "-3")
    with page.expect_navigation():
        page.click("#generate-token button[type=submit]")
    assert "whole number of days" in page.locator("#form-error").inner_text()
    assert page.locator("#token-value").count() == 0


# -- users and passwords ------------------------------------------------------------------------

def _add_user(page, user_name: str, password: str, admin: bool = False) -> None:
    page.goto("/admin/users")
    page.fill("#create-user input[name=user_name]", user_name)
    page.fill("#create-user input[name=password]", password)
    if admin:
        page.check("#create-user input[name=is_admin]")
    with page.expect_navigation():
        page.click("#create-user button[type=submit]")
    assert f"User {user_name} created." in page.locator(".flash-success").inner_text()


def test_password_login_admin_users_and_reset(page, anon_page, server, unique):
    user = unique("ui-user") + "@example.com"
    _add_user(page, user, "first-password-1")
    shot(page, "admin-users")
    assert page.locator("#users tr[data-user='%s']" % user).count() == 1

    other = anon_page
    other.goto("/login")
    login_with_password(other, user, "wrong-password")
    assert "Incorrect user name or password." in other.locator("#login-error").inner_text()
    assert "by_session" not in session_cookies(other)
    shot(other, "login-refused")
    login_with_password(other, user, "first-password-1")
    assert other.url == server.url + "/"
    assert other.locator(".user-name").inner_text() == user
    assert other.locator("nav a.nav-admin").count() == 0  # not an admin
    r = other.goto("/admin/users")
    assert r.status == 403 and "is not an admin" in other.locator(".error-message").inner_text()
    shot(other, "admin-refused")

    # The admin sets a new password: the user's sessions end, the old password stops working.
    row = page.locator(f"#users tr[data-user='{user}']")
    row.locator("input[name=password]").fill("second-password-2")
    with page.expect_navigation():
        row.locator("form.set-password button").click()
    assert f"Password of {user} set" in page.locator(".flash-success").inner_text()
    other.goto("/")
    assert "/login" in other.url
    login_with_password(other, user, "first-password-1")
    assert "Incorrect" in other.locator("#login-error").inner_text()
    login_with_password(other, user, "second-password-2")
    assert other.url == server.url + "/"

    # The user changes their own password (the current one is checked).
    other.goto("/settings/password")
    other.fill("#change-password input[name=current]", "nope-nope-nope")
    other.fill("#change-password input[name=new]", "third-password-3")
    other.fill("#change-password input[name=confirm]", "third-password-3")
    with other.expect_navigation():
        other.click("#change-password button[type=submit]")
    assert "not correct" in other.locator("#form-error").inner_text()
    shot(other, "settings-password")
    other.fill("#change-password input[name=current]", "second-password-2")
    other.fill("#change-password input[name=new]", "third-password-3")
    other.fill("#change-password input[name=confirm]", "third-password-3")
    with other.expect_navigation():
        other.click("#change-password button[type=submit]")
    assert "/login" in other.url
    login_with_password(other, user, "third-password-3")
    assert other.url == server.url + "/"


def test_first_admin_signs_in_with_the_printed_password(tmp_path):
    """`brickyard up` prints the first admin's password at first start; it opens the web UI."""
    from conftest import free_port, run_cli_server

    port = free_port()
    proc = run_cli_server(tmp_path / "home", port)
    try:
        password = None
        for line in proc.stdout:
            match = re.search(r"web login: admin / (\S+)", line)
            if match:
                password = match.group(1)
                break
        assert password
        base = f"http://127.0.0.1:{port}"
        http = requests.Session()
        form = http.get(base + "/login", timeout=30).text
        login_token = re.search(r'name="login_token" value="([^"]+)"', form).group(1)
        r = http.post(base + "/login", data={"method": "password", "username": "admin", "password": "x" * 12,
                                             "login_token": login_token, "next": "/"},
                      allow_redirects=False, timeout=30)
        assert r.status_code == 401 and "by_session" not in http.cookies
        r = http.post(base + "/login", data={"method": "password", "username": "admin", "password": password,
                                             "login_token": login_token, "next": "/"},
                      allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["location"] == "/", r.text
        assert "Welcome, admin" in http.get(base + "/", timeout=30).text
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# -- MLflow UI ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlflow_experiment(server):
    """An experiment with a finished run, logged with the mlflow client over HTTP."""
    from mlflow import MlflowClient

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_TOKEN", server.token)
        client = MlflowClient(tracking_uri=server.url)
        name = "/Shared/ui-mlflow-experiment"
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name)
        run = client.create_run(exp_id, run_name="ui-visible-run")
        client.log_metric(run.info.run_id, "auc", 0.91)
        client.set_terminated(run.info.run_id)
    return exp_id, run.info.run_id


def test_mlflow_ui_behind_the_login(anon_page, server, mlflow_experiment):
    exp_id, run_id = mlflow_experiment
    page = anon_page
    page.goto("/ml/")
    assert re.search(r"/login\?next=%2Fml%2F", page.url), page.url
    login_with_token(page, server.token, next_path="%2Fml%2F")
    assert page.url.startswith(server.url + "/ml/")
    page.goto(f"/ml/#/experiments/{exp_id}/runs/{run_id}")
    page.get_by_text("ui-visible-run").first.wait_for()
    page.get_by_text("auc").first.wait_for()
    shot(page, "mlflow-run")
    page.goto("/ml/#/experiments")
    page.get_by_text("/Shared/ui-mlflow-experiment").first.wait_for()
    shot(page, "mlflow-experiments")


def test_mlflow_cookie_rules(page, server, unique):
    sid = session_cookies(page)["by_session"]
    cookies = {"by_session": sid}
    # Reads from the MLflow UI's paths work with the cookie...
    r = requests.get(server.url + "/ml/ajax-api/2.0/mlflow/experiments/search?max_results=5", cookies=cookies,
                     timeout=30)
    assert r.status_code == 200, r.text
    # ...the REST API does not take it.
    r = requests.get(server.url + "/api/2.0/mlflow/experiments/search?max_results=5", cookies=cookies, timeout=30)
    assert r.status_code == 401
    # A state-changing call with the cookie must come from our origin.
    url = server.url + "/ml/ajax-api/2.0/mlflow/experiments/create"
    name = "/Shared/" + unique("ui-csrf")
    for headers in ({}, {"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = requests.post(url, cookies=cookies, json={"name": name}, headers=headers, timeout=30)
        assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED", (headers, r.text)
    r = server.api("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
    assert r.status_code == 404
    r = requests.post(url, cookies=cookies, json={"name": name}, headers={"Origin": server.url}, timeout=30)
    assert r.status_code == 200, r.text
    # An API client without a browser still gets 401 (not a login page) on /ml/.
    r = requests.get(server.url + "/ml/", timeout=30, allow_redirects=False)
    assert r.status_code == 401


def test_password_guessing_is_throttled(page, anon_page, server, unique):
    user = unique("ui-guess")
    _add_user(page, user, "right-password-1")
    other = anon_page
    other.goto("/login")
    for _ in range(10):
        login_with_password(other, user, "wrong-password")
        assert "Incorrect user name or password." in other.locator("#login-error").inner_text()
    # The eleventh try is not even checked, the right password included.
    login_with_password(other, user, "right-password-1")
    assert "Too many failed sign-ins" in other.locator("#login-error").inner_text()
    assert "by_session" not in session_cookies(other)
    # Other users and token sign-in are not affected.
    login_with_token(other, server.token)
    assert other.url == server.url + "/"


def test_unknown_page_is_a_page_and_unknown_api_is_json(page, server):
    response = page.goto("/no-such-page")
    assert response.status == 404
    assert "There is no page at /no-such-page" in page.locator(".error-message").inner_text()
    assert page.locator(".user-name").inner_text() == "admin"  # the sidebar and top bar are there
    r = requests.get(server.url + "/api/2.0/no-such-api", headers={"Accept": "text/html"}, timeout=30)
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
