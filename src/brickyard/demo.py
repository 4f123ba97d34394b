"""`brickyard demo`: the wine-quality lab end to end, through the public API, as a person would do it.

Every step talks to the workspace over HTTP with the real clients (databricks-sdk, mlflow,
requests) and a token, like the lab's attendee clicking through it: secret scope, cluster and
its library, notebook imports, data upload, the experiment run as a job, then checks of what it
produced. A failing step ends the demo with exit status 1 and names the step; so does a lab the
workspace could only partly do (a step "unavailable"), once the other steps have run.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

LAB = Path(__file__).resolve().parents[2] / "examples" / "wine-lab"
SCOPE = "wine-lab"
CONTAINER = "winelab"
DATA_FILES = {"winequality-red.csv": "winequality_red.csv", "winequality-white.csv": "winequality_white.csv"}
ROWS = 6497
MIN_BASELINE_AUC = 0.85
DEFAULT_MAX_EVALS = 8
UNAVAILABLE_MARK = "UNAVAILABLE:"


class StepFailed(Exception):
    """A demo step did not do what it should; the message says what was seen."""

    def __init__(self, step: str, message: str):
        super().__init__(f"step '{step}' failed: {message}")
        self.step = step
        self.message = message


class Unavailable(Exception):
    """A step the workspace cannot perform yet (its API is missing)."""


@dataclass
class Options:
    host: str | None = None
    token: str | None = None
    home: Path | None = None
    port: int = 0
    max_evals: int = DEFAULT_MAX_EVALS
    job_timeout: int = 1800
    cluster_timeout: int = 600
    lab_dir: Path = LAB
    stay: bool = False


@dataclass
class Outcome:
    """What the demo produced: printed at the end, and read by the tests."""

    urls: dict = field(default_factory=dict)
    exit_value: dict = field(default_factory=dict)
    unavailable: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)


class Reporter:
    """Numbered steps with their timing, and progress lines inside long steps."""

    def __init__(self, total: int, out=sys.stdout):  # noqa: ANN001
        self.total, self.out, self.index = total, out, 0
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def progress(self, text: str) -> None:
        self.say(f"      {text}")

    @contextmanager
    def step(self, name: str, outcome: Outcome):  # noqa: ANN201
        self.index += 1
        self.say(f"[{self.index}/{self.total}] {name} ...")
        t0 = time.monotonic()
        try:
            yield
        except Unavailable as exc:
            outcome.unavailable.append(name)
            self.say(f"      {UNAVAILABLE_MARK} {exc}")
            return
        except StepFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - any error ends the demo at this step
            raise StepFailed(name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            outcome.timings[name] = round(time.monotonic() - t0, 1)
        self.say(f"      done in {outcome.timings[name]:.1f} s (total {time.monotonic() - self.started:.0f} s)")


# ---- the embedded workspace ----------------------------------------------------------------
class Embedded:
    """A workspace in this process (uvicorn in a thread) in a fresh home."""

    def __init__(self, home: Path, port: int):
        import uvicorn

        from brickyard.app import create_app
        from brickyard.bootstrap import bootstrap
        from brickyard.context import open_workspace
        from brickyard.settings import Settings

        if port == 0:
            port = _free_port()
        self.token = "dapi" + secrets.token_hex(16)
        settings = Settings(home=home, host="127.0.0.1", port=port, bootstrap_token=self.token, log_level="warning")
        self.workspace = open_workspace(settings)
        first = bootstrap(self.workspace)
        if first is None:
            raise RuntimeError(f"{home} already holds a workspace: the demo starts from a fresh home.")
        self.url = settings.base_url
        config = uvicorn.Config(create_app(workspace=self.workspace), host="127.0.0.1", port=port,
                                log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="brickyard-demo-server", daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the workspace server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.workspace.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the steps -----------------------------------------------------------------------------
STEPS = ("start the workspace", "create the secret scope and its secrets", "create a Single Node ML cluster",
         "install the mlflow library on the cluster", "import the notebooks", "upload the wine CSVs",
         "run the experiment notebook as a job", "check the outcome", "collect the results")


class Demo:
    def __init__(self, opts: Options, out=sys.stdout):  # noqa: ANN001
        self.opts, self.out = opts, out
        self.report = Reporter(len(STEPS), out)
        self.outcome = Outcome()
        self.embedded: Embedded | None = None
        self.base: Path | None = None
        self.w = None
        self.me = None
        self.cluster_id = None
        self.run = None
        self.progress_note = ""  # the job's "Running command N of M"

    # -- helpers ---------------------------------------------------------------------------
    def _client(self, host: str, token: str):  # noqa: ANN202
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config

        return WorkspaceClient(config=Config(host=host, token=token, auth_type="pat", retry_timeout_seconds=120))

    def _api(self, method: str, path: str, **kw):  # noqa: ANN202
        import requests

        return requests.request(method, self.host + path, headers={"Authorization": f"Bearer {self.token}"},
                                timeout=60, **kw)

    # -- steps -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.opts.host:
            if not self.opts.token:
                raise StepFailed(STEPS[0], "--host needs --token (or DATABRICKS_TOKEN)")
            self.host, self.token = self.opts.host.rstrip("/"), self.opts.token
            self.base = Path(tempfile.mkdtemp(prefix="brickyard-demo-"))
            self.report.progress(f"using the workspace at {self.host}")
        else:
            self.base = Path(self.opts.home or tempfile.mkdtemp(prefix="brickyard-demo-")).resolve()
            home = self.base / "home"
            self.base.mkdir(parents=True, exist_ok=True)
            if home.exists() and any(home.iterdir()):
                raise StepFailed(STEPS[0], f"{home} is not empty: the demo starts from a fresh home")
            logging.basicConfig(filename=self.base / "workspace.log", level=logging.INFO,
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            self.embedded = Embedded(home, self.opts.port)
            # The embedded MLflow server logs to the console by default: keep the steps readable.
            import mlflow  # noqa: F401 - configures the "mlflow" logger first

            logging.getLogger("mlflow").setLevel(logging.WARNING)
            self.host, self.token = self.embedded.url, self.embedded.token
            self.report.progress(f"workspace at {self.host} (home {home}, log {self.base / 'workspace.log'})")
        self.w = self._client(self.host, self.token)
        self.me = self.w.current_user.me().user_name
        self.report.progress(f"signed in as {self.me}")

    def secrets(self) -> None:
        from databricks.sdk.errors import ResourceAlreadyExists

        # A local folder stands in for the lab's storage account (ADLS Gen2 there).
        storage = self.base / "storage-account"
        (storage / CONTAINER / "raw").mkdir(parents=True, exist_ok=True)
        try:
            self.w.secrets.create_scope(scope=SCOPE)
        except ResourceAlreadyExists:
            self.report.progress(f"scope {SCOPE} exists already")
        values = {"storage-account": f"file:{storage}", "storage-sp-client-id": "brickyard-demo",
                  "storage-sp-key": secrets.token_urlsafe(24), "storage-sp-tenant": "local"}
        for key, value in values.items():
            self.w.secrets.put_secret(scope=SCOPE, key=key, string_value=value)
        listed = sorted(s.key for s in self.w.secrets.list_secrets(scope=SCOPE))
        self.report.progress(f"scope {SCOPE}: {', '.join(listed)}")

    def cluster(self) -> None:
        from datetime import timedelta

        from databricks.sdk.service.compute import State

        name = f"wine-lab-{self.me.split('@')[0]}"
        # Against a running workspace, a second demo reuses the first one's cluster.
        for existing in self.w.clusters.list():
            if existing.cluster_name == name and existing.state in (State.RUNNING, State.TERMINATED):
                if existing.state == State.TERMINATED:
                    self.report.progress(f"starting the existing cluster {name}")
                    self.w.clusters.start(existing.cluster_id).result(timeout=timedelta(seconds=self.opts.cluster_timeout))
                self.cluster_id = existing.cluster_id
                self.report.progress(f"cluster {name} ({self.cluster_id}) is RUNNING")
                self._curl_clusters()
                return
        details = self.w.clusters.create_and_wait(
            cluster_name=name, spark_version="17.3.x-cpu-ml-scala2.13",
            node_type_id="local.medium", num_workers=0, autotermination_minutes=60,
            spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"},
            custom_tags={"ResourceClass": "SingleNode"}, timeout=timedelta(seconds=self.opts.cluster_timeout))
        self.cluster_id = details.cluster_id
        self.report.progress(f"cluster {details.cluster_name} ({self.cluster_id}) is {details.state.value}, "
                             f"auto-terminates after {details.autotermination_minutes} idle minutes")
        self._curl_clusters()

    def _curl_clusters(self) -> None:
        """The lab's REST API step: list the clusters with a token, as its curl example does."""
        listed = self._api("GET", "/api/2.0/clusters/list")
        listed.raise_for_status()
        names = [c["cluster_name"] for c in listed.json().get("clusters", [])]
        self.report.progress(f"curl -H 'Authorization: Bearer dapi…' {self.host}/api/2.0/clusters/list: {names}")

    def library(self) -> None:
        from databricks.sdk.errors import NotFound
        from databricks.sdk.service.compute import Library, PythonPyPiLibrary

        try:
            self.w.libraries.install(cluster_id=self.cluster_id, libraries=[Library(pypi=PythonPyPiLibrary("mlflow"))])
        except NotFound as exc:
            raise Unavailable(f"the workspace has no Libraries API ({exc}); the ML runtime already has mlflow")
        deadline = time.time() + 600
        while True:
            statuses = [s for s in self.w.libraries.cluster_status(self.cluster_id)
                        if s.library and s.library.pypi and s.library.pypi.package == "mlflow"]
            state = statuses[0].status.value if statuses and statuses[0].status else "PENDING"
            if state == "INSTALLED":
                break
            if state == "FAILED":
                raise StepFailed(STEPS[3], "mlflow failed to install: " + "; ".join(statuses[0].messages or []))
            if time.time() > deadline:
                raise StepFailed(STEPS[3], f"mlflow is still {state} after 10 minutes")
            time.sleep(1)
        self.report.progress("mlflow: INSTALLED")

    def notebooks(self) -> None:
        from databricks.sdk.errors import NotFound
        from databricks.sdk.service.workspace import ImportFormat

        lab = self.opts.lab_dir
        helper = "/Shared/HelperFunctions"
        try:  # a DBC import never overwrites: replace the helper by hand
            self.w.workspace.get_status(helper)
            self.w.workspace.delete(helper)
        except NotFound:
            pass
        self.w.workspace.import_(helper, content=_b64(lab / "HelperFunctions.dbc"), format=ImportFormat.DBC)
        home = f"/Users/{self.me}"
        self.w.workspace.mkdirs(f"{home}/samples")
        imports = {f"{home}/FullExperiment": lab / "FullExperiment.ipynb",
                   f"{home}/samples/BaseExperiment": lab / "samples" / "BaseExperiment.ipynb"}
        for path, file in imports.items():
            self.w.workspace.import_(path, content=_b64(file), format=ImportFormat.JUPYTER, overwrite=True)
        for path in [helper, *imports]:
            status = self.w.workspace.get_status(path)
            self.report.progress(f"{path} ({status.object_type.value}, {status.language.value})")

    def upload(self) -> None:
        folder = f"/FileStore/shared_uploads/{self.me}"
        for local, remote in DATA_FILES.items():
            with open(self.opts.lab_dir / "data" / local, "rb") as fh:
                self.w.dbfs.upload(f"{folder}/{remote}", fh, overwrite=True)
        for info in self.w.dbfs.list(folder):
            self.report.progress(f"dbfs:{info.path} ({info.file_size:,} bytes)")

    def job(self) -> None:
        from databricks.sdk.service.jobs import NotebookTask, RunLifeCycleState, SubmitTask

        # The model and endpoint names are left to the notebook: per user (<user>_wine_quality,
        # <user>-wine-quality), so attendees of one workspace do not overwrite each other's.
        params = {"secret_scope": SCOPE, "storage_container": CONTAINER, "max_evals": str(self.opts.max_evals),
                  "parallelism": "2"}
        self.report.progress(f"parameters: {json.dumps(params)}")
        waiter = self.w.jobs.submit(run_name="wine-lab: FullExperiment", tasks=[SubmitTask(
            task_key="experiment", existing_cluster_id=self.cluster_id, timeout_seconds=self.opts.job_timeout,
            notebook_task=NotebookTask(notebook_path=f"/Users/{self.me}/FullExperiment", base_parameters=params))])
        run_id = waiter.run_id
        t0, last, said = time.monotonic(), (None, ""), 0.0
        while True:
            run = self.w.jobs.get_run(run_id)
            state = run.state.life_cycle_state
            task_state = run.tasks[0].state if run.tasks else None
            note = (task_state.state_message or "") if task_state else ""
            if note.startswith("Running command"):
                self.progress_note = note  # e.g. "Running command 12 of 40"
            now = time.monotonic() - t0
            seen = (state, self.progress_note)
            if state != last[0] or (seen != last and now - said >= 10) or now - said >= 30:
                where = ""
                if state == RunLifeCycleState.RUNNING and self.progress_note:
                    where = f", {self.progress_note.lower()[len('running '):]}"
                self.report.progress(f"run {run_id}: {state.value} ({now:.0f} s{where})")
                last, said = seen, now
            if state in (RunLifeCycleState.TERMINATED, RunLifeCycleState.SKIPPED, RunLifeCycleState.INTERNAL_ERROR):
                break
            time.sleep(2)
        self.run = run
        # The run's page in the web UI (run_page_url is the same page as a Databricks hash route).
        self.outcome.urls["run page"] = f"{self.host}/jobs/runs/{run.run_id}"
        task_run = run.tasks[0].run_id
        output = self.w.jobs.get_run_output(task_run)
        if run.state.result_state is None or run.state.result_state.value != "SUCCESS":
            trace = (output.error_trace or "").strip().splitlines()[-12:]
            where = ""
            if self.progress_note:
                where = f"\n      it stopped in {self.progress_note.lower()[len('running '):]}"
            saved = self._save_run_html()
            ended = run.state.result_state.value if run.state.result_state else run.state.life_cycle_state.value
            raise StepFailed(STEPS[6], f"the run ended {ended}: {output.error}{where}\n"
                                       + "".join("        " + line + "\n" for line in trace)
                                       + (f"      the run's notebook with its outputs: {saved}" if saved else ""))
        result = output.notebook_output.result if output.notebook_output else None
        try:
            self.outcome.exit_value = json.loads(result or "")
        except ValueError:
            raise StepFailed(STEPS[6], f"the notebook's exit value is not the lab's JSON: {result!r}") from None
        self.report.progress(f"exit value: {result}")

    def check(self) -> None:
        value = self.outcome.exit_value
        baseline, tuned = value.get("baseline_auc"), value.get("tuned_auc")
        _expect(isinstance(baseline, float) and baseline >= MIN_BASELINE_AUC,
                f"baseline AUC {baseline} is below {MIN_BASELINE_AUC}")
        _expect(isinstance(tuned, float) and tuned >= baseline, f"tuned AUC {tuned} is below the baseline {baseline}")
        self.report.progress(f"AUC: random forest {baseline:.4f}, tuned xgboost {tuned:.4f}")
        self._check_registry(value)
        self._check_table(value)
        if not value.get("mounts"):
            self.outcome.unavailable.append("mounts")
            self.report.progress(f"{UNAVAILABLE_MARK} the notebook could not mount the storage (see its output)")
        self._check_endpoint(value)

    def _check_registry(self, value: dict) -> None:
        from mlflow.tracking import MlflowClient

        os.environ["MLFLOW_TRACKING_TOKEN"] = self.token
        client = MlflowClient(tracking_uri=self.host, registry_uri=self.host)
        model = value.get("model_name")
        _expect(isinstance(model, str) and model != "", f"the notebook's exit value names no model: {value}")
        stages = {v.version: v.current_stage for v in client.search_model_versions(f"name='{model}'")}
        old, new = str(value.get("baseline_version")), str(value.get("tuned_version"))
        _expect(stages.get(old) == "Archived" and stages.get(new) == "Production",
                f"expected version {old} Archived and {new} Production; the registry has {stages}")
        if self.embedded is not None:
            _expect(sorted(stages) == ["1", "2"], f"a fresh workspace should hold versions 1 and 2: {stages}")
        self.report.progress(f"registry: {model} " + ", ".join(f"v{k} {v}" for k, v in sorted(stages.items())))
        experiment = client.get_experiment(value["experiment_id"])
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        self.outcome.urls["MLflow experiment"] = f"{self.host}/ml/#/experiments/{experiment.experiment_id}"
        self.report.progress(f"experiment {experiment.name}: {len(runs)} runs "
                             f"({value.get('sweep_runs')} in the sweep)")

    def _check_table(self, value: dict) -> None:
        from databricks.sdk.service.compute import Language

        table = f"{value['database']}.wine_predictions"
        ctx = self.w.command_execution.create_and_wait(cluster_id=self.cluster_id, language=Language.SQL)
        try:
            res = self.w.command_execution.execute_and_wait(
                cluster_id=self.cluster_id, context_id=ctx.id, language=Language.SQL,
                command=f"SELECT count(*) AS n, count(prediction) AS scored FROM {table}")
        finally:
            self.w.command_execution.destroy(cluster_id=self.cluster_id, context_id=ctx.id)
        if res.results is None or res.results.result_type.value != "table":
            raise StepFailed(STEPS[7], f"could not read {table}: {res.results and res.results.cause}")
        n, scored = (int(x) for x in res.results.data[0])
        _expect(n == ROWS and scored == ROWS, f"{table} has {n} rows, {scored} scored; expected {ROWS}")
        self.report.progress(f"inference table {table}: {n} rows, all scored")

    def _check_endpoint(self, value: dict) -> None:
        r = self._api("GET", "/api/2.0/serving-endpoints")
        if r.status_code == 404 and "error_code" not in r.text:
            self.outcome.unavailable.append("serving endpoint")
            self.report.progress(f"{UNAVAILABLE_MARK} the workspace has no serving endpoints API yet")
            return
        name = value.get("endpoint_name")
        _expect(isinstance(name, str) and name != "", f"the notebook's exit value names no endpoint: {value}")
        endpoint = self.w.serving_endpoints.get(name)
        _expect(endpoint.state is not None and endpoint.state.ready is not None
                and endpoint.state.ready.value == "READY", f"endpoint {name} is not READY: {endpoint.state}")
        rows = _sample_rows(self.opts.lab_dir, 3)
        answer = self.w.serving_endpoints.query(name, dataframe_records=rows)
        preds = answer.predictions or []
        _expect(len(preds) == 3 and all(0.0 <= float(p) <= 1.0 for p in preds),
                f"endpoint {name} answered {preds!r} for 3 rows")
        quoted = quote(name, safe="")
        self.outcome.urls["serving endpoint"] = f"{self.host}/serving/endpoints/{quoted}"
        self.outcome.urls["scoring URL (POST)"] = f"{self.host}/serving-endpoints/{quoted}/invocations"
        self.report.progress(f"endpoint {name} answered {', '.join(f'{float(p):.3f}' for p in preds)}")

    def _save_run_html(self) -> Path | None:
        """The run's notebook with its outputs, saved as HTML next to the demo's home (None if not exported)."""
        from databricks.sdk.service.jobs import ViewsToExport

        try:
            export = self.w.jobs.export_run(self.run.tasks[0].run_id, views_to_export=ViewsToExport.CODE)
        except Exception:  # noqa: BLE001 - a failed run may have no notebook to export
            return None
        html = self.base / "FullExperiment-run.html"
        html.write_text(export.views[0].content if export.views else "")
        return html

    def results(self) -> None:
        html = self._save_run_html()
        _expect(html is not None, "the run's notebook could not be exported as HTML", STEPS[8])
        urls = self.outcome.urls
        order = ("run page", "MLflow experiment", "serving endpoint", "scoring URL (POST)")
        self.outcome.urls = {k: urls[k] for k in order if k in urls} | {"run HTML (saved)": str(html)}
        self._check_pages()

    def _check_pages(self) -> None:
        """The printed pages open in a browser: sign in with the token (the login page's Token tab), GET each."""
        import re

        import requests

        web = requests.Session()
        form = web.get(f"{self.host}/login", timeout=60)
        nonce = re.search(r'name="login_token" value="([^"]+)"', form.text)
        _expect(form.status_code == 200 and nonce is not None,
                f"the web UI's sign-in page did not open (HTTP {form.status_code})", STEPS[8])
        signed = web.post(f"{self.host}/login", timeout=60, allow_redirects=False,
                          data={"method": "token", "token": self.token, "login_token": nonce[1], "next": "/"})
        _expect(signed.status_code == 303, f"signing in to the web UI with the token failed "
                                           f"(HTTP {signed.status_code})", STEPS[8])
        opened = []
        for label in ("run page", "MLflow experiment", "serving endpoint"):
            url = self.outcome.urls.get(label)
            if url is None:
                continue
            page = web.get(url.split("#")[0], timeout=60, allow_redirects=False)
            _expect(page.status_code == 200 and page.headers.get("content-type", "").startswith("text/html"),
                    f"the {label} {url} does not open in a browser: HTTP {page.status_code} "
                    f"{page.headers.get('content-type')}", STEPS[8])
            opened.append(label)
        self.report.progress(f"signed in to the web UI with the token: {', '.join(opened)} open (HTTP 200)")

    # -- the whole demo --------------------------------------------------------------------
    def run_all(self) -> int:
        say = self.report.say
        say(f"Brickyard demo: the wine-quality lab end to end (sweep of {self.opts.max_evals} evaluations)")
        steps = (self.start, self.secrets, self.cluster, self.library, self.notebooks, self.upload, self.job,
                 self.check, self.results)
        try:
            for name, fn in zip(STEPS, steps):
                with self.report.step(name, self.outcome):
                    fn()
        except KeyboardInterrupt:
            # A second Ctrl-C or SIGTERM must not cut the clean-up short (it would leave processes behind).
            for sig in (signal.SIGINT, signal.SIGTERM):
                if threading.current_thread() is threading.main_thread():
                    signal.signal(sig, signal.SIG_IGN)
            say("\nInterrupted: stopping.")
            if self.base is not None:
                say(f"(files of this demo: {self.base})")
            self._finish(interrupted=True)
            return 130
        except StepFailed as exc:
            say(f"\nFAILED at step '{exc.step}': {exc.message}")
            if self.base is not None:
                say(f"(files of this demo: {self.base})")
            self._finish()
            return 1
        elapsed = time.monotonic() - self.report.started
        missing = self.outcome.unavailable
        if missing:
            say(f"\nThe lab ran in {elapsed:.0f} s, but not all of it.")
        else:
            say(f"\nThe lab ran end to end in {elapsed:.0f} s.")
        for label, url in self.outcome.urls.items():
            say(f"  {label + ':':20} {url}")
        if "scoring URL (POST)" in self.outcome.urls:
            say(f"  (score rows with: curl -H \"Authorization: Bearer $DATABRICKS_TOKEN\" -H 'Content-Type: "
                f"application/json' -d '{{\"dataframe_records\": [...]}}' {self.outcome.urls['scoring URL (POST)']})")
        if self.embedded is not None:
            say(f"\n  export DATABRICKS_HOST={self.host}\n  export DATABRICKS_TOKEN={self.token}")
        if missing:
            say(f"\nINCOMPLETE: not done: {', '.join(missing)} (this workspace could not do "
                f"{'it' if len(missing) == 1 else 'them'}; see the {UNAVAILABLE_MARK} lines above). Exit status 1.")
        self._finish()
        return 1 if missing else 0

    def _finish(self, interrupted: bool = False) -> None:
        if self.embedded is None:
            return
        if self.opts.stay and not interrupted:
            self.report.say("\nThe workspace keeps running; press Ctrl-C to stop it.")
            try:
                while self.embedded.thread.is_alive():
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        self.report.say("Stopping the workspace ...")
        self.embedded.stop()


def _expect(condition: bool, message: str, step: str = STEPS[7]) -> None:
    if not condition:
        raise StepFailed(step, message)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _sample_rows(lab: Path, n: int) -> list[dict]:
    """The first n red wines as the model's input rows (underscored names, is_red)."""
    import csv

    with open(lab / "data" / "winequality-red.csv", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=";")
        rows = []
        for row in reader:
            rows.append({k.replace(" ", "_"): float(v) for k, v in row.items() if k != "quality"} | {"is_red": 1})
            if len(rows) == n:
                return rows
    return rows


def _interrupt(signum, frame) -> None:  # noqa: ANN001
    raise KeyboardInterrupt


def main(opts: Options, out=sys.stdout) -> int:  # noqa: ANN001
    """Run the demo; 0 when every step passed, 1 when one failed or could not be done (named in the output),
    130 when stopped.

    SIGTERM stops it like Ctrl-C: the embedded workspace stops its clusters, kernels and servers.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    return Demo(opts, out).run_all()


def cmd_demo(args) -> int:  # noqa: ANN001
    if args.max_evals < 1:
        raise ValueError("--max-evals must be at least 1")
    stay = args.stay if args.stay is not None else (sys.stdout.isatty() and sys.stdin.isatty())
    token = args.token or (os.environ.get("DATABRICKS_TOKEN") if args.host else None)
    if args.job_timeout < 1:
        raise ValueError("--job-timeout must be at least 1 second")
    return main(Options(host=args.host, token=token, home=Path(args.home) if args.home else None, port=args.port,
                        max_evals=96 if args.full_sweep else args.max_evals, stay=stay,
                        job_timeout=args.job_timeout))


def add_parser(sub) -> None:  # noqa: ANN001
    """The `brickyard demo` command."""
    demo = sub.add_parser("demo", help="run the wine-quality lab end to end (a fresh embedded workspace, or --host)")
    demo.add_argument("--home", help="folder for the demo's fresh workspace home and files (default: a new temp folder)")
    demo.add_argument("--port", type=int, default=0, help="port of the embedded workspace (default: a free one)")
    demo.add_argument("--host", help="use this running workspace instead of starting one")
    demo.add_argument("--token", help="its personal access token (default: DATABRICKS_TOKEN)")
    demo.add_argument("--max-evals", type=int, default=DEFAULT_MAX_EVALS,
                      help=f"hyperopt evaluations of the sweep (default {DEFAULT_MAX_EVALS})")
    demo.add_argument("--job-timeout", type=int, default=Options.job_timeout,
                      help=f"seconds the experiment job may run before it is stopped (default {Options.job_timeout})")
    demo.add_argument("--full-sweep", action="store_true", help="the original lab's 96 evaluations")
    demo.add_argument("--stay", dest="stay", action="store_true", default=None,
                      help="keep the embedded workspace running when done (default when interactive)")
    demo.add_argument("--exit", dest="stay", action="store_false", help="stop the embedded workspace when done")
    demo.set_defaults(func=cmd_demo)
