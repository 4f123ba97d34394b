"""Compute pages in a real browser: Create Cluster form -> RUNNING (page and SDK), libraries from the
Libraries tab (PyPI and an uploaded wheel) -> INSTALLED, driver logs, Spark UI link, terminate and delete
from the cluster page, form errors that keep the values, instance pools."""
from __future__ import annotations

import io
import re
import zipfile

import pytest
import requests
from playwright.sync_api import expect
from ui_support import csrf_of, login_with_password, session_cookies, shot

pytestmark = pytest.mark.ui

START_TIMEOUT_MS = 300_000
INSTALL_TIMEOUT_MS = 300_000
PYPI_PACKAGE = "pyjokes==0.8.3"  # small, pure Python; tests/test_pools_libraries.py installs it too


def _wheel(tmp_path, module: str) -> str:
    """A minimal pure-Python wheel (no dependencies, so pip installs it offline)."""
    dist, version = module, "0.1"
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{module}.py": "VALUE = 'from an uploaded wheel'\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    path = tmp_path / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr(f"{info}/RECORD", record)
    return str(path)


def _js_errors(page) -> list[str]:  # noqa: ANN001
    """Console errors other than the browser's note on a form answered 400/409 (a refused form)."""
    return [e for e in page.console_errors if not e.startswith("Failed to load resource: the server responded "
                                                                   "with a status of 4")]


def _row(page, name: str):  # noqa: ANN001, ANN202
    return page.locator("#cluster-rows tr", has=page.locator("a.cluster-link", has_text=re.compile(f"^{re.escape(name)}$")))


@pytest.mark.slow
def test_single_node_cluster_from_the_form_libraries_logs_terminate_delete(page, anon_page, server, w, unique,
                                                                           tmp_path):
    name = unique("ui-cluster-")
    page.goto("/compute")
    expect(page.locator("#create-cluster")).to_be_visible()
    page.click("#create-cluster")
    assert page.url.endswith("/compute/create")
    page.fill("#cluster_name", name)
    page.select_option("#mode", "single_node")
    # Single Node: no worker counts to fill (compute.js hides them); the runtime comes from the catalog.
    expect(page.locator("#min_workers")).to_be_hidden()
    expect(page.locator("#num_workers")).to_be_hidden()
    runtimes = [o.get_attribute("value") for o in page.locator("#spark_version option").all()]
    assert runtimes == [v.key for v in w.clusters.spark_versions().versions]
    page.select_option("#spark_version", "17.3.x-cpu-ml-scala2.13")
    page.select_option("#node_type_id", "local.medium")
    page.fill("#autotermination_minutes", "45")
    page.click("#advanced summary")
    page.fill("#spark_conf", "spark.sql.shuffle.partitions 4\nspark.ui.showConsoleProgress false")
    page.fill("#env_vars", "BY_UI_GREETING=hello world")
    shot(page, "compute-create")
    with page.expect_navigation():
        page.click("#create-cluster-submit")
    match = re.search(r"/compute/([0-9]{4}-[0-9]{6}-[0-9a-f]{8})$", page.url)
    assert match, page.url
    cid = match.group(1)
    assert "is starting" in page.locator(".flash-success").inner_text()

    # What the form sent is the API's spec.
    details = w.clusters.get(cid)
    assert details.cluster_name == name and details.cluster_source.value == "UI"
    assert details.num_workers == 0 and details.autotermination_minutes == 45
    assert details.spark_conf["spark.databricks.cluster.profile"] == "singleNode"
    assert details.spark_conf["spark.master"].startswith("local[")
    assert details.spark_conf["spark.sql.shuffle.partitions"] == "4"
    assert details.spark_env_vars == {"BY_UI_GREETING": "hello world"}
    assert details.custom_tags == {"ResourceClass": "SingleNode"}

    # The list shows it and its state changes live (htmx polling, no reload) until RUNNING.
    page.goto("/compute")
    row = _row(page, name)
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(2)).to_have_text("Single Node")
    expect(row.locator(".cluster-state")).to_have_text("RUNNING", timeout=START_TIMEOUT_MS)
    assert w.clusters.get(cid).state.value == "RUNNING"
    shot(page, "compute-list")

    # A second cluster with the same name is refused, the form keeps what was typed.
    page.goto("/compute/create")
    page.fill("#cluster_name", name)
    page.select_option("#mode", "single_node")
    page.click("#advanced summary")
    page.fill("#spark_conf", "spark.sql.shuffle.partitions 7")
    with page.expect_navigation():
        page.click("#create-cluster-submit")
    assert "already exists" in page.locator("#form-error").inner_text()
    assert page.input_value("#cluster_name") == name
    assert page.input_value("#mode") == "single_node"
    assert page.input_value("#spark_conf") == "spark.sql.shuffle.partitions 7"
    assert [c.cluster_id for c in w.clusters.list() if c.cluster_name == name] == [cid]
    shot(page, "compute-create-duplicate")

    # The cluster's page: state, configuration, events, driver log, Spark UI link.
    page.goto(f"/compute/{cid}")
    expect(page.locator("#cluster-state")).to_have_text("RUNNING")
    assert page.locator("#cluster-id").inner_text() == cid
    assert "BY_UI_GREETING=hello world" in page.locator("#cluster-env-vars").inner_text()
    page.click("#tab-events")
    expect(page.locator("#cluster-events .event-type", has_text=re.compile("^RUNNING$"))).to_have_count(1)
    expect(page.locator("#cluster-events .event-type", has_text="CREATING")).to_have_count(1)
    shot(page, "compute-cluster-events")
    page.click("#tab-driver-logs")
    expect(page.locator("#driver-log")).not_to_be_empty()
    assert "KB" in page.locator("#driver-log-note").inner_text()
    shot(page, "compute-cluster-driver-logs")
    page.click("#tab-spark-ui")
    api = requests.get(f"{server.url}/api/2.1/clusters/get", params={"cluster_id": cid},
                       headers={"Authorization": f"Bearer {server.token}"}, timeout=30).json()
    assert api["spark_ui_url"].startswith("http")
    assert page.get_attribute("#spark-ui-link", "href") == api["spark_ui_url"]
    assert requests.get(api["spark_ui_url"], timeout=30).status_code == 200  # the driver's own UI answers

    # Another (non-admin) user sees the cluster, but may not change its libraries or read its driver log,
    # as the Libraries API refuses them.
    other, password = unique("ui-user-"), "ui-compute-pw-1"
    page.goto("/admin/users")
    page.fill("#create-user input[name=user_name]", other)
    page.fill("#create-user input[name=password]", password)
    with page.expect_navigation():
        page.click("#create-user button[type=submit]")
    login_with_password(anon_page, other, password)
    anon_page.goto(f"/compute/{cid}?tab=libraries")
    expect(anon_page.locator("#cluster-state")).to_have_text("RUNNING")
    expect(anon_page.locator("#install-library-form")).to_have_count(0)
    expect(anon_page.locator("#panel-libraries")).to_contain_text("Only the cluster's creator or an admin")
    r = anon_page.request.get(f"/compute/{cid}/_driver_logs")
    assert r.status == 403 and "may read its driver logs" in r.text()
    r = anon_page.request.post(f"/compute/{cid}/libraries/install", headers={"X-CSRF-Token": csrf_of(anon_page)},
                               form={"source": "pypi", "package": PYPI_PACKAGE})
    assert r.status == 403 and "Only the creator of cluster" in r.text()

    # Libraries tab: a missing package name is refused with the reason, then a PyPI package and an
    # uploaded wheel (stored in DBFS, then installed) reach INSTALLED.
    page.goto(f"/compute/{cid}")
    page.click("#tab-libraries")
    expect(page.locator("#cluster-libraries")).to_contain_text("No libraries installed")
    page.check("#source-pypi")
    page.fill("#pypi-package", "")
    with page.expect_navigation():
        page.click("#install-library")
    assert "pypi.package is required" in page.locator("#library-error").inner_text()
    expect(page.locator("#panel-libraries")).to_be_visible()
    page.check("#source-upload")
    expect(page.locator("#pypi-package")).to_be_hidden()
    page.set_input_files("#library-file", _wheel(tmp_path, "by_ui_wheel"))
    with page.expect_navigation():
        page.click("#install-library")
    assert "Installing dbfs:/FileStore/jars/" in page.locator(".flash-success").inner_text()
    page.check("#source-pypi")
    page.fill("#pypi-package", PYPI_PACKAGE)
    with page.expect_navigation():
        page.click("#install-library")
    assert f"Installing {PYPI_PACKAGE}" in page.locator(".flash-success").inner_text()
    expect(page.locator("#panel-libraries")).to_be_visible()
    for lib in (PYPI_PACKAGE, "by_ui_wheel-0.1-py3-none-any.whl"):
        status = page.locator(".library-row", has=page.locator(".library-name", has_text=lib)).locator(".library-status")
        expect(status).to_have_text("INSTALLED", timeout=INSTALL_TIMEOUT_MS)
    statuses = {(s.library.pypi.package if s.library.pypi else s.library.whl): s.status.value
                for s in w.libraries.cluster_status(cid)}
    whl = next(k for k in statuses if k.endswith(".whl"))
    assert statuses == {PYPI_PACKAGE: "INSTALLED", whl: "INSTALLED"}
    assert re.fullmatch(r"dbfs:/FileStore/jars/[0-9a-f]{32}/by_ui_wheel-0\.1-py3-none-any\.whl", whl)
    assert w.dbfs.get_status(whl).file_size > 0
    libdir = server.workspace.services["clusters"].launcher.library_dir(cid)
    assert (libdir / "by_ui_wheel.py").read_text() == "VALUE = 'from an uploaded wheel'\n"
    assert (libdir / "pyjokes").is_dir()
    shot(page, "compute-cluster-libraries")

    # Terminate from the page (confirmed), then delete.
    page.on("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#terminate-cluster")
    expect(page.locator("#cluster-state")).to_have_text("TERMINATED", timeout=120_000)
    details = w.clusters.get(cid)
    assert details.state.value == "TERMINATED"
    assert details.termination_reason.code.value == "USER_REQUEST"
    expect(page.locator("#start-cluster")).to_be_visible()
    shot(page, "compute-cluster-terminated")

    # Maven coordinates: checked by the Libraries service; on a terminated cluster a library waits as PENDING.
    page.click("#tab-libraries")
    page.check("#source-maven")
    page.fill("#maven-coordinates", "not-coordinates")
    with page.expect_navigation():
        page.click("#install-library")
    assert "maven.coordinates must be groupId:artifactId:version" in page.locator("#library-error").inner_text()
    assert page.input_value("#maven-coordinates") == "not-coordinates" and page.is_checked("#source-maven")
    page.fill("#maven-coordinates", "org.example.brickyard:no-such-artifact:1.0")
    with page.expect_navigation():
        page.click("#install-library")
    maven = page.locator(".library-row", has=page.locator(".library-name", has_text="no-such-artifact"))
    expect(maven.locator(".library-status")).to_have_text("PENDING")
    assert [s.status.value for s in w.libraries.cluster_status(cid) if s.library.maven] == ["PENDING"]
    with page.expect_navigation():
        page.click("#delete-cluster")
    assert page.url.endswith("/compute")
    assert f"Cluster {name} deleted." in page.locator(".flash-success").inner_text()
    assert cid not in [c.cluster_id for c in w.clusters.list()]
    expect(_row(page, name)).to_have_count(0)
    assert _js_errors(page) == []


def test_create_form_errors_keep_the_values(page, w, unique):
    name = unique("ui-bad-")
    page.goto("/compute/create")
    page.fill("#cluster_name", name)
    page.select_option("#mode", "standard")
    page.check("#autoscale")
    expect(page.locator("#num_workers")).to_be_hidden()
    page.fill("#min_workers", "5")
    page.fill("#max_workers", "2")
    page.click("#advanced summary")
    page.fill("#spark_conf", "spark.sql.shuffle.partitions 3")
    page.fill("#env_vars", "GOOD=1")
    with page.expect_navigation():
        page.click("#create-cluster-submit")
    # The API's own validation message (clusters/create answers the same for this body).
    assert page.locator("#form-error").inner_text() == "autoscale.min_workers must not exceed autoscale.max_workers."
    assert (page.input_value("#cluster_name"), page.input_value("#min_workers"), page.input_value("#max_workers")) \
        == (name, "5", "2")
    assert page.is_checked("#autoscale") and page.input_value("#mode") == "standard"
    assert page.input_value("#spark_conf") == "spark.sql.shuffle.partitions 3"
    assert page.input_value("#env_vars") == "GOOD=1"
    shot(page, "compute-create-error")

    page.fill("#min_workers", "1")
    page.fill("#env_vars", "1BAD=x")
    with page.expect_navigation():
        page.click("#create-cluster-submit")
    assert "'1BAD' is not a valid environment variable name" in page.locator("#form-error").inner_text()
    page.fill("#env_vars", "NO_EQUALS_SIGN")
    with page.expect_navigation():
        page.click("#create-cluster-submit")
    assert "expected 'NAME=value'" in page.locator("#form-error").inner_text()
    assert page.input_value("#env_vars") == "NO_EQUALS_SIGN"
    assert name not in [c.cluster_name for c in w.clusters.list()]
    assert _js_errors(page) == []


def test_create_without_csrf_token_is_refused(page, server, w, unique):
    name = unique("ui-csrf-")
    page.goto("/compute/create")
    cookies = session_cookies(page)
    form = {"cluster_name": name, "mode": "single_node", "spark_version": "17.3.x-scala2.13",
            "node_type_id": "local.small"}
    r = requests.post(server.url + "/compute/create", cookies=cookies, data=form, allow_redirects=False, timeout=30)
    assert r.status_code == 403 and "Request refused" in r.text
    r = requests.post(server.url + "/compute/create", cookies=cookies, data={**form, "csrf_token": csrf_of(page)},
                      headers={"Origin": "http://evil.example"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403
    assert name not in [c.cluster_name for c in w.clusters.list()]


def test_pools_list_create_page_delete(page, w, unique):
    name = unique("ui-pool-")
    page.goto("/compute/pools")
    expect(page.locator("#tab-pools")).to_have_class(re.compile("active"))
    page.click("#create-pool")
    page.fill("#instance_pool_name", name)
    page.fill("#min_idle_instances", "0")  # no warm JVM: the test starts no Spark
    page.fill("#max_capacity", "3")
    page.fill("#idle_minutes", "15")
    page.select_option("#pool_node_type_id", "local.small")
    page.select_option("#preloaded_spark_version", "17.3.x-scala2.13")
    shot(page, "compute-pool-create")
    with page.expect_navigation():
        page.click("#create-pool-submit")
    pool_id = page.locator("#pool-id").inner_text()
    assert page.url.endswith(f"/compute/pools/{pool_id}")
    pool = w.instance_pools.get(pool_id)
    assert (pool.instance_pool_name, pool.node_type_id, pool.min_idle_instances, pool.max_capacity,
            pool.idle_instance_autotermination_minutes, pool.preloaded_spark_versions) \
        == (name, "local.small", 0, 3, 15, ["17.3.x-scala2.13"])
    assert page.locator("#stat-idle").inner_text() == str(pool.stats.idle_count or 0) == "0"
    assert page.locator("#stat-used").inner_text() == "0"
    expect(page.locator("#pool-clusters")).to_contain_text("None.")
    shot(page, "compute-pool")

    # The Create Cluster form offers it.
    page.goto("/compute/create")
    assert page.locator(f"#instance_pool_id option[value='{pool_id}']").inner_text().startswith(name)

    # A second pool with the same name is refused and the form keeps its values.
    page.goto("/compute/pools/create")
    page.fill("#instance_pool_name", name)
    page.fill("#min_idle_instances", "9")
    page.fill("#max_capacity", "12")
    with page.expect_navigation():
        page.click("#create-pool-submit")
    assert "min_idle_instances must be an integer between 0 and 8; got 9" in page.locator("#form-error").inner_text()
    assert page.input_value("#instance_pool_name") == name and page.input_value("#min_idle_instances") == "9"
    assert page.input_value("#max_capacity") == "12"
    page.fill("#min_idle_instances", "0")
    with page.expect_navigation():
        page.click("#create-pool-submit")
    assert "already exists" in page.locator("#form-error").inner_text()

    page.goto("/compute/pools")
    row = page.locator("#pools tr", has=page.locator("a.pool-link", has_text=name))
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(6)).to_have_text("3")
    shot(page, "compute-pools")
    row.locator("a.pool-link").click()
    page.on("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#delete-pool")
    assert page.url.endswith("/compute/pools")
    assert f"Instance pool {name} deleted." in page.locator(".flash-success").inner_text()
    assert pool_id not in [p.instance_pool_id for p in w.instance_pools.list()]
    assert _js_errors(page) == []


def test_form_fields_become_the_api_body():
    """The other modes and fields of the form (the browser tests above start a Single Node cluster only)."""
    from brickyard.errors import BrickyardError
    from brickyard.services import cluster_spec
    from brickyard.ui.pages_compute import cluster_body

    base = {"cluster_name": " team ", "spark_version": "17.3.x-scala2.13", "node_type_id": "local.small",
            "driver_node_type_id": "local.medium", "autotermination": "on", "autotermination_minutes": "30"}
    hc = cluster_body({**base, "mode": "high_concurrency", "autoscale": "on", "min_workers": "1", "max_workers": "3",
                       "spark_conf": "# comment\nspark.a 1\nspark.b=x y\n\n", "env_vars": "A=b=c",
                       "init_scripts": "/Users/me/init.sh\ndbfs:/init/x.sh\nfile:/opt/i.sh\n/Volumes/c/s/v/i.sh"})
    assert hc["cluster_name"] == "team" and hc["autoscale"] == {"min_workers": 1, "max_workers": 3}
    assert "num_workers" not in hc and hc["autotermination_minutes"] == 30
    assert hc["spark_conf"]["spark.a"] == "1" and hc["spark_conf"]["spark.b"] == "x y"
    assert hc["spark_env_vars"] == {"A": "b=c"}
    assert hc["init_scripts"] == [{"workspace": {"destination": "/Users/me/init.sh"}},
                                  {"dbfs": {"destination": "dbfs:/init/x.sh"}},
                                  {"file": {"destination": "file:/opt/i.sh"}},
                                  {"volumes": {"destination": "/Volumes/c/s/v/i.sh"}}]
    spec, _ = cluster_spec.normalize(hc)
    assert cluster_spec.mode_of(spec) == cluster_spec.HIGH_CONCURRENCY
    assert spec["driver_node_type_id"] == "local.medium"

    std = cluster_body({**base, "mode": "standard", "num_workers": "2", "autotermination": "",
                        "instance_pool_id": "pool-1"})
    assert std["num_workers"] == 2 and std["autotermination_minutes"] == 0
    assert std["instance_pool_id"] == "pool-1" and "node_type_id" not in std  # the pool's node type is used
    assert cluster_spec.mode_of(cluster_spec.normalize({**std, "node_type_id": "local.small"})[0]) == \
        cluster_spec.STANDARD

    for bad, message in (({"mode": "standard", "num_workers": "two"}, "Workers must be a whole number"),
                         ({"mode": "single_node", "autotermination_minutes": "5"}, "between 10 and 43200"),
                         ({"mode": "single_node", "spark_conf": "lonely"}, "Spark config, line 1"),
                         ({"mode": "single_node", "init_scripts": "s3://b/i.sh"}, "Init scripts, line 1"),
                         ({"mode": "serverless"}, "Cluster Mode must be")):
        with pytest.raises(BrickyardError) as err:
            cluster_body({**base, **bad})
        assert message in err.value.message
