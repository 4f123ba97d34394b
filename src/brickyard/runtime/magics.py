"""Databricks cell magics (%sql, %md, %run, %sh, %fs, %pip, %python, %scala, %r) and running notebooks in a kernel.

A cell whose first line is a magic is rewritten by an IPython input transformer into a
call ``_brickyard_magic(kind, args, body)``, looked up in the namespace that runs the
cell: the kernel's own, or a child notebook's (dbutils.notebook.run), so %run and widgets
resolve against the right notebook. ``cell_code`` is shared with the server-side runner.
"""
from __future__ import annotations

import ast
import contextlib
import io
import os
import posixpath
import re
import shlex
import signal
import subprocess
import sys
import threading

# Magics that Databricks treats as the cell's language; IPython's own (%timeit, %%time...) pass through.
CELL_MAGICS = ("python", "sql", "md", "md-sandbox", "run", "sh", "fs", "pip", "scala", "r")
_MAGIC_LINE = re.compile(r"^%([A-Za-z][\w-]*)(?:[ \t]+(.*))?$")


def cell_code(source: str, language: str) -> str:
    """The code a kernel runs for a cell of a notebook in `language` (PYTHON, SQL, SCALA, R)."""
    stripped = source.lstrip("\n")
    m = _MAGIC_LINE.match(stripped.split("\n", 1)[0])
    if m and m.group(1).lower() in CELL_MAGICS:
        return source
    if language == "SQL":
        return "%sql\n" + source
    if language in ("SCALA", "R"):
        return f"%{language.lower()}\n" + source
    return source


def split_magic(source: str) -> tuple[str, str, str] | None:
    """(kind, args, body) when the cell starts with one of CELL_MAGICS, else None."""
    lines = source.split("\n")
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i == len(lines):
        return None
    m = _MAGIC_LINE.match(lines[i].rstrip())
    if not m or m.group(1).lower() not in CELL_MAGICS:
        return None
    return m.group(1).lower(), (m.group(2) or "").strip(), "\n".join(lines[i + 1:])


def transform(lines: list[str]) -> list[str]:
    """IPython cleanup transformer: a magic cell becomes one call of _brickyard_magic."""
    found = split_magic("".join(lines).replace("\r\n", "\n"))
    if found is None:
        return lines
    kind, args, body = found
    if kind == "python":
        code = (args + "\n" if args else "") + body
        return [line + "\n" for line in code.split("\n")]
    return [f"_brickyard_magic({kind!r}, {args!r}, {body!r})\n"]


def split_sql(text: str) -> list[str]:
    """Split on semicolons outside quotes and comments."""
    out, buf, quote, i = [], [], None, 0
    while i < len(text):
        ch = text[i]
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
            buf.append(ch)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
            continue
        elif ch == ";":
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


_LEGACY_REF = re.compile(r"""\\\$|\$\{(\w+)\}|\$(\w+)|\bgetArgument\(\s*(['"])(\w+)\3\s*(?:,\s*(['"])(.*?)\5\s*)?\)""")
_CREATE_WIDGET = re.compile(r"""^\s*CREATE\s+WIDGET\s+(TEXT|DROPDOWN|COMBOBOX|MULTISELECT)\s+(`[^`]+`|\w+)\s+"""
                            r"""DEFAULT\s+('(?:[^']*)'|"(?:[^"]*)")(?:\s+CHOICES\s+(.+))?\s*$""", re.I | re.S)
_REMOVE_WIDGET = re.compile(r"^\s*REMOVE\s+WIDGET\s+(`[^`]+`|\w+)\s*$", re.I)
_MARKER_NAME = re.compile(r"[A-Za-z_]\w*")


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`" else text


def substitute_widgets(text: str, values: dict[str, str]) -> str:
    """Databricks' legacy widget references in SQL cells: ${name} and $name become the widget's value
    (as text, so '${d}' in a string literal works), getArgument('name'[, 'default']) a string literal;
    \\$ is a literal $. References to names that are not widgets are left for Spark (${var} substitution).
    """
    def one(m: re.Match) -> str:
        if m.group(0) == "\\$":
            return "$"
        name = m.group(1) or m.group(2)
        if name is not None:
            return values[name] if name in values else m.group(0)
        value = values.get(m.group(4), m.group(6))
        if value is None:
            return m.group(0)
        return _sql_literal(value)
    return _LEGACY_REF.sub(one, text)


def _sql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def bind_markers(statement: str, values: dict[str, str]) -> str:
    """Named parameter markers (:name) of widgets become string literals; others are left for Spark.

    Outside string literals, quoted identifiers and comments only, and not the :: cast operator.
    (Spark's own binding, spark.sql(text, args=...), does not work with Delta's SQL extension
    here, so the values are bound as escaped literals: a string parameter in every place a
    literal may stand, IDENTIFIER(:name) included.)
    """
    out, quote, i, n = [], None, 0, len(statement)
    while i < n:
        ch = statement[i]
        if quote:
            if ch == "\\" and quote != "`":
                out.append(statement[i:i + 2])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
        elif statement.startswith("--", i) or statement.startswith("/*", i):
            end = statement.find("\n" if ch == "-" else "*/", i + 2)
            end = n if end < 0 else end + (0 if ch == "-" else 2)
            out.append(statement[i:end])
            i = end
            continue
        elif ch == ":" and (i == 0 or not (statement[i - 1] == ":" or statement[i - 1].isalnum()
                                           or statement[i - 1] == "_")):
            m = _MARKER_NAME.match(statement, i + 1)
            if m and m.group(0) in values:
                out.append(_sql_literal(values[m.group(0)]))
                i = m.end()
                continue
        out.append(ch)
        i += 1
    return "".join(out)


class MagicNotSupported(Exception):
    """A cell language Brickyard clusters do not run (Scala, R)."""


class ChildTimeout(BaseException):  # noqa: N818 - raised by a timer, not a user-facing error
    """A notebook started with dbutils.notebook.run ran past its timeout."""


def _run_arguments(args: str) -> tuple[str, dict[str, str]]:
    """`%run ./nb $a="1" $b=2` -> ('./nb', {'a': '1', 'b': '2'})."""
    parts = shlex.split(args)
    if not parts:
        raise ValueError("%run needs a notebook path, e.g. %run ./helpers")
    params = {}
    for part in parts[1:]:
        if not part.startswith("$") or "=" not in part:
            raise ValueError(f"%run arguments look like $name=value, not {part!r}")
        key, value = part[1:].split("=", 1)
        params[key] = value
    return parts[0], params


class Frame:
    """One notebook namespace: its globals, dbutils, the notebook path and how to run its magics."""

    def __init__(self, ns: dict, dbutils, notebook_path: str | None, library_dir: str | None,  # noqa: ANN001
                 dbfs_root: str | None, cancel_jobs=None):  # noqa: ANN001
        self.ns = ns
        self.dbutils = dbutils
        self.paths = [notebook_path or ""]
        self.library_dir = library_dir
        self.dbfs_root = dbfs_root
        self.cancel_jobs = cancel_jobs
        ns["_brickyard_magic"] = self.magic

    # -- magics -------------------------------------------------------------------------
    def magic(self, kind: str, args: str, body: str):  # noqa: ANN201
        handler = getattr(self, "_" + kind.replace("-", "_"))
        return handler(args, body)

    def _sql(self, args: str, body: str) -> None:
        spark = self.ns["spark"]
        widgets = self.dbutils.widgets
        result = None
        text = (args + "\n" + body) if args else body
        values = widgets.getAll()
        if values:
            text = substitute_widgets(text, values)
        for statement in split_sql(text):
            if self._widget_statement(statement):
                continue
            # Named parameter markers (:name) take widget values, as in Databricks notebooks.
            result = spark.sql(bind_markers(statement, values))
            values = widgets.getAll()
        if result is not None and result.columns:
            self.ns["display"](result)

    def _widget_statement(self, statement: str) -> bool:
        """CREATE WIDGET ... / REMOVE WIDGET name: the SQL form of dbutils.widgets."""
        m = _REMOVE_WIDGET.match(statement)
        if m:
            self.dbutils.widgets.remove(_unquote(m.group(1)))
            return True
        m = _CREATE_WIDGET.match(statement)
        if not m:
            return False
        kind, name, default, choices = m.group(1).lower(), _unquote(m.group(2)), _unquote(m.group(3)), m.group(4)
        widgets = self.dbutils.widgets
        if kind == "text":
            widgets.text(name, default)
            return True
        if not choices:
            raise ValueError(f"CREATE WIDGET {kind.upper()} {name} needs CHOICES SELECT ... (a query of the choices)")
        options = [str(r[0]) for r in self.ns["spark"].sql(choices).collect()]
        getattr(widgets, kind)(name, default, options)
        return True

    def _md(self, args: str, body: str) -> None:
        from IPython.display import display

        text = (args + "\n" + body) if args else body
        # The plain-text form is the Markdown itself (not "<IPython.core.display.Markdown object>"): it is
        # what text-only views (the Command Execution API, an HTML export) show.
        display({"text/markdown": text, "text/plain": text}, raw=True)

    _md_sandbox = _md

    def _scala(self, args: str, body: str) -> None:  # noqa: ARG002
        raise MagicNotSupported("%scala is not supported on Brickyard clusters: only Python and SQL cells run "
                                "(use %python or %sql).")

    def _r(self, args: str, body: str) -> None:  # noqa: ARG002
        raise MagicNotSupported("%r is not supported on Brickyard clusters: only Python and SQL cells run "
                                "(use %python or %sql).")

    def _python(self, args: str, body: str):  # noqa: ANN202
        return self.exec_source((args + "\n" if args else "") + body)

    def _sh(self, args: str, body: str) -> None:
        fail = "-e" in args.split()
        script = body
        if self.dbfs_root and not _dbfs_mounted(self.dbfs_root):
            # No /dbfs mount in this process: point shell commands at the DBFS root instead.
            script = re.sub(r"(?<![\w/])/dbfs(?=/|\b)", self.dbfs_root.rstrip("/"), script)
        code = self._stream(["bash", "-c", script])
        if fail and code != 0:
            raise subprocess.CalledProcessError(code, "%sh")

    def _pip(self, args: str, body: str) -> None:  # noqa: ARG002
        argv = shlex.split(args)
        if argv and argv[0] == "install" and self.library_dir:
            code = self._pip_install(argv[1:])
        else:
            code = self._stream([sys.executable, "-m", "pip", "--disable-pip-version-check", *argv])
        import importlib

        importlib.invalidate_caches()
        if code != 0:
            raise subprocess.CalledProcessError(code, "%pip " + args)

    def _pip_install(self, argv: list[str]) -> int:
        """pip install into the cluster's library folder, which its notebooks and UDF workers import from.

        pip --target would reinstall every dependency the runtime already has (it ignores installed
        packages); --prefix into a staging folder keeps them, then the new packages are moved in.
        """
        import shutil
        import tempfile

        libs = self.library_dir
        os.makedirs(libs, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=".pip-", dir=os.path.dirname(libs.rstrip("/")))
        try:
            code = self._stream([sys.executable, "-m", "pip", "--disable-pip-version-check", "install",
                                 "--prefix", stage, "--no-warn-script-location", *argv])
            if code != 0:
                return code
            for site in {os.path.dirname(p) for p in _glob(stage, "*-info")}:
                for name in os.listdir(site):
                    if name.endswith((".dist-info", ".egg-info")):
                        project = _project(name)
                        for old in os.listdir(libs):
                            if old.endswith((".dist-info", ".egg-info")) and _project(old) == project:
                                shutil.rmtree(os.path.join(libs, old), ignore_errors=True)
                    target = os.path.join(libs, name)
                    if os.path.isdir(target) and not os.path.islink(target):
                        shutil.rmtree(target)
                    elif os.path.lexists(target):
                        os.remove(target)
                    shutil.move(os.path.join(site, name), target)
            if libs not in sys.path:
                sys.path.insert(0, libs)
            return 0
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def _fs(self, args: str, body: str):  # noqa: ANN202, ARG002
        argv = shlex.split(args)
        if not argv:
            self.dbutils.fs.help()
            return None
        cmd, rest = argv[0], argv[1:]
        flags = {a for a in rest if a.startswith("-")}
        rest = [a for a in rest if not a.startswith("-")]
        recurse = bool(flags & {"-r", "--recurse", "-R"})
        fs = self.dbutils.fs
        if cmd == "ls":
            result = fs.ls(rest[0] if rest else "/")
        elif cmd == "mounts":
            result = fs.mounts()
        elif cmd == "head":
            print(fs.head(rest[0], int(rest[1]) if len(rest) > 1 else 65536))
            return None
        elif cmd in ("cp", "mv"):
            result = getattr(fs, cmd)(rest[0], rest[1], recurse)
        elif cmd == "rm":
            result = fs.rm(rest[0], recurse)
        elif cmd == "mkdirs":
            result = fs.mkdirs(rest[0])
        elif cmd == "put":
            result = fs.put(rest[0], rest[1], "-f" in flags or "--overwrite" in flags)
        elif cmd == "help":
            fs.help()
            return None
        else:
            raise ValueError(f"%fs {cmd}: unknown command; try ls, head, cp, mv, rm, mkdirs, put, mounts")
        if isinstance(result, list):
            self.ns["display"](result)
        else:
            print(result)
        return None

    def _run(self, args: str, body: str) -> None:  # noqa: ARG002
        path, params = _run_arguments(args)
        path = self.resolve(path)
        nb = self.fetch(path)
        widgets = self.dbutils.widgets
        saved = dict(widgets._params)  # noqa: SLF001 - %run $x=... sets widgets for the included notebook
        widgets._params.update(params)  # noqa: SLF001
        self.paths.append(path)
        try:
            self.run_notebook(nb)
        finally:
            self.paths.pop()
            widgets._params = saved  # noqa: SLF001

    # -- notebooks ----------------------------------------------------------------------
    def resolve(self, path: str) -> str:
        """An absolute workspace path; relative ones are relative to the running notebook's folder.

        ``/Workspace/X`` is Databricks' file-system name of ``/X`` (as in the Workspace API).
        """
        if not path.startswith("/"):
            path = posixpath.join(posixpath.dirname(self.paths[-1]) or "/", path)
        path = posixpath.normpath(path)
        if path == "/Workspace" or path.startswith("/Workspace/"):
            path = path[len("/Workspace"):] or "/"
        return path

    def fetch(self, path: str):  # noqa: ANN201
        """The notebook at `path`, exported through the workspace API with the user's token."""
        import base64

        from brickyard.runtime.dbutils import RestError
        from brickyard.runtime.formats import read_notebook

        rest = self.dbutils.fs._rest  # noqa: SLF001
        try:
            status = rest.call("GET", "/api/2.0/workspace/get-status", {"path": path})
            if status.get("object_type") != "NOTEBOOK":
                raise FileNotFoundError(f"Notebook not found: {path} is a {status.get('object_type')}")
            out = rest.call("GET", "/api/2.0/workspace/export", {"path": path, "format": "SOURCE"})
        except RestError as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise FileNotFoundError(f"Notebook not found: {path}") from None
            raise
        return read_notebook("SOURCE", base64.b64decode(out.get("content") or ""), posixpath.basename(path),
                             language=status.get("language"))

    def run_notebook(self, nb) -> None:  # noqa: ANN001
        for cell in nb.cells:
            code = cell_code(cell.source, nb.language)
            if code.strip():
                self.exec_source(code)

    def exec_source(self, source: str):  # noqa: ANN201
        """Run cell source in this namespace; a trailing expression is displayed, as in a notebook cell."""
        code = _transform_cell(source)
        tree = ast.parse(code, filename="<notebook cell>", mode="exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<notebook cell>", "exec"), self.ns)  # noqa: S102 - running notebook code is the point
        if last is not None:
            value = eval(compile(last, "<notebook cell>", "eval"), self.ns)  # noqa: S307
            if value is not None:
                from IPython.display import display

                display(value)
        return None

    def run_child(self, path: str, timeout_seconds: int, arguments: dict, base: dict, new_dbutils):  # noqa: ANN001
        """dbutils.notebook.run: the child runs in this kernel in a fresh namespace; returns its exit value."""
        from brickyard.runtime.dbutils import NotebookExit, WorkflowException

        path = self.resolve(path)
        nb = self.fetch(path)
        ns = dict(base)
        ns["__name__"] = "__main__"
        child_dbutils = new_dbutils({str(k): str(v) for k, v in (arguments or {}).items()}, path)
        ns["dbutils"] = child_dbutils
        ns["getArgument"] = child_dbutils.widgets.getArgument
        child = Frame(ns, child_dbutils, path, self.library_dir, self.dbfs_root, self.cancel_jobs)
        child_dbutils.notebook._runner = (  # noqa: SLF001
            lambda p, t, a: child.run_child(p, t, a, base, new_dbutils))
        timer = _Timer(timeout_seconds, self.cancel_jobs)
        try:
            with timer, _quiet():
                child.run_notebook(nb)
        except NotebookExit as done:
            return done.value
        except ChildTimeout:
            raise WorkflowException(f"com.databricks.WorkflowException: com.databricks.NotebookExecutionException: "
                                    f"Notebook {path} timed out after {timeout_seconds} seconds") from None
        except Exception as exc:  # noqa: BLE001 - reported to the caller as Databricks does
            raise WorkflowException(f"com.databricks.WorkflowException: com.databricks.NotebookExecutionException: "
                                    f"FAILED: Notebook {path} failed: {type(exc).__name__}: {exc}") from exc
        return None

    def _stream(self, argv: list[str]) -> int:
        """Run a command, copying its output to the cell's stdout as it comes; returns the exit code."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=os.environ.copy())
        try:
            for line in iter(proc.stdout.readline, b""):
                sys.stdout.write(line.decode("utf-8", errors="replace"))
            return proc.wait()
        except BaseException:
            proc.kill()
            raise


def _glob(root: str, pattern: str) -> list[str]:
    import glob

    return glob.glob(os.path.join(root, "**", "site-packages", pattern), recursive=True)


def _project(dist_info: str) -> str:
    """The normalised project name of a foo_bar-1.0.dist-info folder."""
    return re.sub(r"[-_.]+", "_", dist_info.rsplit(".", 1)[0].split("-", 1)[0]).lower()


def _dbfs_mounted(root: str) -> bool:
    from brickyard.runtime.dbfs_paths import mounted

    return mounted(root)


def _transform_cell(source: str) -> str:
    try:
        shell = get_ipython()  # noqa: F821 - defined inside IPython
    except NameError:
        shell = None
    if shell is not None:
        return shell.transform_cell(source)
    return "".join(transform(source.splitlines(keepends=True)))


class _Timer:
    """Raise ChildTimeout in the main thread after `seconds` (0: never); cancels this kernel's Spark jobs."""

    def __init__(self, seconds: int, cancel_jobs=None):  # noqa: ANN001
        self.seconds = int(seconds or 0)
        self.cancel_jobs = cancel_jobs
        self._old = None

    def _fire(self, signum, frame):  # noqa: ANN001, ARG002
        if self.cancel_jobs is not None:
            threading.Thread(target=self.cancel_jobs, daemon=True).start()
        raise ChildTimeout()

    def __enter__(self):  # noqa: ANN204
        if self.seconds > 0 and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        if self._old is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)


@contextlib.contextmanager
def _quiet():
    """A child notebook's output does not go to the parent cell (as on Databricks)."""
    try:
        pub = get_ipython().display_pub  # noqa: F821
    except (NameError, AttributeError):
        pub = None
    saved = pub.publish if pub is not None else None
    if pub is not None:
        pub.publish = lambda *a, **k: None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if pub is not None:
            pub.publish = saved


def install(shell, frame: Frame) -> None:  # noqa: ANN001
    """Register the cell transformer and line-magic forms (%pip, %sh, %fs, %run, %sql, %md mid-cell)."""
    if transform not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.insert(0, transform)

    def line_magic(kind: str):  # noqa: ANN202
        def run(line: str):  # noqa: ANN202
            # %sh/%sql/%md take their text as the body; %pip/%fs/%run as arguments.
            return frame.magic(kind, "", line) if kind in ("sh", "sql", "md") else frame.magic(kind, line, "")

        run.__name__ = kind
        return run

    for kind in ("pip", "sh", "fs", "run", "sql", "md"):
        shell.register_magic_function(line_magic(kind), "line", kind)
