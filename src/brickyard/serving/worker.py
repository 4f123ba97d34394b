"""A small scoring server: MLflow pyfunc models loaded once, behind a plain asyncio HTTP/1.1 server.

It runs as one worker process of a served model version (the workspace proxies to it on
loopback) and, unchanged, as the entry point of an exported container. It imports nothing from
Brickyard, so that an export can copy this one file.

    python worker.py --model NAME=DIR[:WEIGHT] ... [--host H] [--port P] [--port-file F]
                     [--threads N] [--key-env VAR] [--parent-pid PID]
"""
from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import signal
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("brickyard.serving.worker")
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PLAIN_TYPES = frozenset({"double", "float", "long", "integer", "boolean", "string"})
MAX_BODY = 16 << 20
MAX_HEADER_LINES = 100
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           411: "Length Required", 413: "Payload Too Large", 500: "Internal Server Error"}


class BadInput(Exception):
    """A request the model cannot score; answered with 400."""


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


class Model:
    """One pyfunc model, loaded once, with its input schema."""

    def __init__(self, name: str, path: str, weight: int = 100):
        import mlflow.pyfunc

        self.name, self.weight, self.current = name, weight, 0
        self.pyfunc = mlflow.pyfunc.load_model(path)
        self.schema = self.pyfunc.metadata.get_input_schema()
        self.columns = self._required_columns()
        # Plain columns (numbers, booleans, strings) need no per-column decoding: a DataFrame built
        # directly is what MLflow's parser would give after enforcement, at a tenth of its cost.
        self.plain = bool(self.columns) and all(
            str(getattr(c.type, "name", c.type)) in PLAIN_TYPES for c in self.schema.inputs)
        # The required columns of a signature made of doubles only (empty otherwise).
        self.doubles = frozenset(self.columns) if self.plain and all(
            str(getattr(c.type, "name", c.type)) == "double" for c in self.schema.inputs) else frozenset()

    def _required_columns(self) -> dict[str, str]:
        """Column name -> type name of a column-based signature ({} for tensors or none)."""
        if self.schema is None or self.schema.is_tensor_spec() or not self.schema.has_input_names():
            return {}
        out = {}
        for col in self.schema.inputs:
            if getattr(col, "required", True) and col.name is not None:
                out[col.name] = str(getattr(col.type, "name", col.type))
        return out

    def _check_columns(self, fmt: str, value: object) -> None:
        """Name the first missing or mistyped column before MLflow's long enforcement message would."""
        if not self.columns:
            return
        if fmt == "dataframe_split":
            if not isinstance(value, dict) or not isinstance(value.get("data"), list):
                raise BadInput("dataframe_split must be an object with 'columns' and 'data'.")
            columns = value.get("columns")
            if not isinstance(columns, list):
                raise BadInput("dataframe_split must list its 'columns'.")
            rows = [dict(zip(columns, row)) for row in value["data"] if isinstance(row, list)]
        elif fmt in ("dataframe_records", "instances") and isinstance(value, list) and value \
                and all(isinstance(r, dict) for r in value):
            rows = value
        elif fmt == "inputs" and isinstance(value, dict):
            rows = [{k: (v[0] if isinstance(v, list) and v else v) for k, v in value.items()}]
        else:
            return  # tensors: MLflow's own enforcement decides
        present = set().union(*(r.keys() for r in rows)) if rows else set()
        for name in self.columns:
            if name not in present:
                raise BadInput(f"Missing column '{name}' required by the model signature "
                               f"(expected columns: {', '.join(self.columns)}).")
        for name, kind in self.columns.items():
            if kind in ("double", "float", "long", "integer"):
                for row in rows:
                    v = row.get(name)
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                        raise BadInput(f"Column '{name}' must be of type {kind}; got {json.dumps(v)[:80]}.")

    def _fast_frame(self, fmt: str, value: object):  # noqa: ANN202
        """A DataFrame for split/records input of a plain column signature; None to use MLflow's parser."""
        if not self.plain:
            return None
        import pandas as pd

        if fmt == "dataframe_split" and set(value) <= {"columns", "data"}:
            if self.doubles and value["data"] and self.doubles.issuperset(value["columns"]):
                # Only the signature's double columns (their values already checked to be numbers):
                # one float64 block is cheaper to build, and to enforce and predict on, than columns
                # inferred from nested lists. Nulls and ragged rows take the general path below.
                import numpy as np

                try:
                    block = np.array(value["data"], dtype=np.float64)
                except (TypeError, ValueError):
                    block = None
                if block is not None and block.ndim == 2 and block.shape[1] == len(value["columns"]) \
                        and not np.isnan(block).any():
                    return pd.DataFrame(block, columns=value["columns"])
            return pd.DataFrame(value["data"], columns=value["columns"])
        if fmt == "dataframe_records":
            return pd.DataFrame.from_records(value)
        return None

    def score(self, data: dict) -> bytes:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import infer_and_parse_data
        from mlflow.utils.proto_json_utils import NumpyEncoder, _get_jsonable_obj

        keys = [k for k in FORMATS if k in data]
        if len(keys) != 1:
            raise BadInput(f"Send exactly one of {', '.join(FORMATS)}; got fields {sorted(data)}.")
        fmt = keys[0]
        self._check_columns(fmt, data[fmt])
        params = data.get("params")
        try:
            frame = self._fast_frame(fmt, data[fmt])
            if frame is None:
                frame = infer_and_parse_data({fmt: data[fmt]}, self.schema)
            raw = self.pyfunc.predict(frame, params=params) if params else self.pyfunc.predict(frame)
        except MlflowException as exc:
            message = exc.message
            # MLflow repeats the whole input before the reason; keep the reason.
            if "Error: " in message:
                message = message.rsplit("Error: ", 1)[1]
            raise BadInput(message.strip()[:2000]) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise BadInput(f"The model could not score this input: {type(exc).__name__}: {exc}"[:2000]) from None
        return json.dumps({"predictions": _get_jsonable_obj(raw, pandas_orient="records")},
                          cls=NumpyEncoder).encode()


class Scorer:
    """The models of this server and the traffic split between them (smooth weighted round-robin)."""

    def __init__(self, models: list[Model], threads: int, key: str | None):
        self.models = models
        self.total = sum(m.weight for m in models) or 1
        # With one thread, predictions run on the event loop: CPU-bound models gain nothing from
        # threads under the GIL, and each hand-off to a thread costs latency.
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict") if threads > 1 else None
        self.key = key

    def pick(self) -> Model:
        if len(self.models) == 1:
            return self.models[0]
        best = None
        for m in self.models:
            m.current += m.weight
            if best is None or m.current > best.current:
                best = m
        best.current -= self.total
        return best

    def invoke(self, model: Model, body: bytes) -> tuple[int, bytes]:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return 400, _error("BAD_REQUEST", f"The request body is not valid JSON: {exc}")
        if not isinstance(data, dict):
            return 400, _error("BAD_REQUEST", "The request body must be a JSON object.")
        try:
            return 200, model.score(data)
        except BadInput as exc:
            return 400, _error("BAD_REQUEST", str(exc))
        except Exception as exc:  # noqa: BLE001 - a model bug must not kill the server
            log.error("prediction failed:\n%s", traceback.format_exc())
            return 500, _error("INTERNAL_ERROR", f"The model failed: {type(exc).__name__}: {exc}"[:2000])


async def _read_request(reader: asyncio.StreamReader):  # noqa: ANN202
    line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise ValueError("bad request line")
    headers = {}
    for _ in range(MAX_HEADER_LINES):
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return parts[0], parts[1], headers


def _response(status: int, body: bytes, extra: dict | None = None, close: bool = False) -> bytes:
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "content-type: application/json",
            f"content-length: {len(body)}"]
    for k, v in (extra or {}).items():
        head.append(f"{k}: {v}")
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Server:
    """HTTP/1.1 with keep-alive; predictions on the loop (--threads 1) or on a thread pool."""

    def __init__(self, scorer: Scorer, max_body: int = MAX_BODY):
        self.scorer = scorer
        self.max_body = max_body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = await _read_request(reader)
                if req is None:
                    break
                method, target, headers = req
                if headers.get("transfer-encoding"):
                    writer.write(_response(411, _error("BAD_REQUEST", "Send a Content-Length."), close=True))
                    break
                length = int(headers.get("content-length") or 0)
                if length > self.max_body:
                    writer.write(_response(413, _error("REQUEST_ENTITY_TOO_LARGE",
                                                       f"The payload is larger than {self.max_body} bytes."),
                                           close=True))
                    break
                body = await reader.readexactly(length) if length else b""
                writer.write(await self.dispatch(method, target.split("?", 1)[0], headers, body))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def dispatch(self, method: str, path: str, headers: dict, body: bytes) -> bytes:
        if path in ("/ping", "/health", "/ready", "/healthz"):
            return _response(200, b"{}")
        if not (path == "/invocations" or (path.startswith("/serving-endpoints/") and path.endswith("/invocations"))):
            return _response(404, _error("ENDPOINT_NOT_FOUND", f"No route for {path}."))
        if method != "POST":
            return _response(405, _error("BAD_REQUEST", "Use POST."))
        if self.scorer.key is not None:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.scorer.key.encode()):
                return _response(401, _error("UNAUTHENTICATED", "Send 'Authorization: Bearer <endpoint key>'."))
        model = self.scorer.pick()
        if self.scorer.pool is None:
            status, payload = self.scorer.invoke(model, body)  # one at a time, no thread hop
        else:
            loop = asyncio.get_running_loop()
            status, payload = await loop.run_in_executor(self.scorer.pool, self.scorer.invoke, model, body)
        return _response(status, payload, {"served-model-name": model.name})


async def _watch_parent(parent: int) -> None:
    """Exit when the workspace that started this worker is gone (no orphans after a kill -9)."""
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


async def serve(args: argparse.Namespace) -> None:
    models = []
    for spec in args.model:
        name, _, rest = spec.partition("=")
        path, weight = rest, 100
        if ":" in rest.rsplit("/", 1)[-1]:
            path, _, w = rest.rpartition(":")
            weight = int(w)
        started = time.monotonic()
        models.append(Model(name, path, weight))
        log.info("loaded model %s from %s in %.2f s", name, path, time.monotonic() - started)
    key = os.environ.get(args.key_env) if args.key_env else None
    if args.key_env and not key:
        raise SystemExit(f"{args.key_env} is not set: refusing to serve without a key")
    server = Server(Scorer(models, args.threads, key), args.max_body)
    srv = await asyncio.start_server(server.handle, args.host, args.port, limit=1 << 16)
    port = srv.sockets[0].getsockname()[1]
    log.info("serving %s on %s:%d", ", ".join(m.name for m in models), args.host, port)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(str(port))
        os.replace(tmp, args.port_file)  # the workspace reads the port only once it is complete
    if args.parent_pid:
        asyncio.ensure_future(_watch_parent(args.parent_pid))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with srv:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="NAME=DIR[:WEIGHT], repeatable")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--port-file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-body", type=int, default=MAX_BODY)
    p.add_argument("--key-env", help="environment variable holding the bearer key clients must send")
    p.add_argument("--parent-pid", type=int)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [pid %(process)d] %(message)s")
    try:
        asyncio.run(serve(args))
    except Exception:
        log.error("the scoring server failed:\n%s", traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
