"""Install cluster libraries: PyPI packages and wheels with pip, Maven coordinates with Spark's own Ivy.

Python packages go under the cluster's pip --prefix (its driver, Python workers and notebooks
import from there). The runtime's packages stay visible and are never reinstalled: pip runs
with a constraints file pinning every package of the runtime, so a library that needs another
version of one of them fails with pip's reason instead of shadowing it.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from xml.sax.saxutils import quoteattr

from brickyard.compute.environment import user_environ
from brickyard.compute import runtime
from brickyard.compute.launcher import site_dir

PIP_TIMEOUT = 600
IVY_TIMEOUT = 600
COORDINATES_RE = re.compile(r"^[A-Za-z0-9_.\-]+:[A-Za-z0-9_.\-]+:[A-Za-z0-9_.\-+]+$")
CENTRAL = "https://repo1.maven.org/maven2/"


class InstallError(RuntimeError):
    """pip or Ivy failed; the message quotes their reason."""


@functools.cache
def _runtime_pins() -> str:
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name and dist.version and "+" not in dist.version:
            pins[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(sorted(pins.values())) + "\n"


def constraints_file(folder: Path) -> Path:
    """A pip constraints file pinning the runtime's packages."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "runtime-constraints.txt"
    text = _runtime_pins()
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _pip_reason(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("ERROR") or "conflict" in line.lower()]
    return "\n".join(errors[-8:]) or output[-1500:]


def pip_install(prefix: Path, args: list[str], constraints: Path, repo: str | None = None) -> str:
    """pip install args into prefix; returns pip's last lines, raises InstallError with pip's reason."""
    cmd = [sys.executable, "-m", "pip", "install", "--prefix", str(prefix), "--no-warn-script-location",
           "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "20",
           "-c", str(constraints)]
    if repo:
        cmd += ["--index-url", repo]
    env = user_environ()
    # Packages already in the cluster's folder count as installed (so are not fetched again).
    env["PYTHONPATH"] = ":".join(p for p in (str(site_dir(prefix)), env.get("PYTHONPATH")) if p)
    env.pop("PIP_TARGET", None)
    env.pop("PIP_PREFIX", None)
    try:
        proc = subprocess.run(cmd + ["--", *args] if args and not args[0].startswith("-") else cmd + args,
                              capture_output=True, text=True, timeout=PIP_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        raise InstallError(f"pip did not finish within {PIP_TIMEOUT} s.") from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise InstallError(_pip_reason(output))
    return "\n".join(output.strip().splitlines()[-2:])


def _ivy_files(folder: Path, coordinates: str, repo: str | None, exclusions: list[str]) -> tuple[Path, Path]:
    group, artifact, version = coordinates.split(":")
    resolvers = "".join(
        f'<ibiblio name="r{i}" m2compatible="true" root={quoteattr(url)}/>'
        for i, url in enumerate([u for u in (repo, CENTRAL) if u]))
    excludes = "".join(
        f"<exclude org={quoteattr(e.split(':')[0])} module={quoteattr(e.split(':')[1] if ':' in e else '*')}/>"
        for e in exclusions)
    settings = folder / "ivysettings.xml"
    settings.write_text(
        '<ivysettings><settings defaultResolver="chain"/><resolvers>'
        f'<chain name="chain" returnFirst="true">{resolvers}</chain></resolvers></ivysettings>')
    module = folder / "ivy.xml"
    module.write_text(
        '<ivy-module version="2.0"><info organisation="brickyard" module="cluster-library"/>'
        '<configurations><conf name="default"/></configurations><dependencies>'
        f'<dependency org={quoteattr(group)} name={quoteattr(artifact)} rev={quoteattr(version)} '
        f'conf="default->default">{excludes}</dependency></dependencies></ivy-module>')
    return settings, module


def maven_resolve(coordinates: str, cache: Path, repo: str | None = None,
                  exclusions: list[str] | None = None) -> list[Path]:
    """The jars of group:artifact:version and its runtime dependencies, fetched with Spark's Ivy."""
    if not COORDINATES_RE.match(coordinates):
        raise InstallError(f"Maven coordinates must be groupId:artifactId:version; got {coordinates!r}.")
    ivy = next((runtime.spark_home() / "jars").glob("ivy-*.jar"), None)
    if ivy is None:
        raise InstallError("Spark's Ivy jar is missing from pyspark's jars folder.")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ivy-", dir=cache) as tmp:
        settings, module = _ivy_files(Path(tmp), coordinates, repo, exclusions or [])
        out = Path(tmp) / "classpath.txt"
        cmd = [runtime.java_bin(), f"-Divy.cache.dir={cache}", "-Divy.home=" + str(cache), "-cp", str(ivy),
               "org.apache.ivy.Main", "-settings", str(settings), "-ivy", str(module), "-cache", str(cache),
               "-cachepath", str(out), "-confs", "default"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=IVY_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise InstallError(f"Maven resolution did not finish within {IVY_TIMEOUT} s.") from None
        output = proc.stdout + proc.stderr
        if proc.returncode != 0 or not out.exists():
            lines = [ln.strip() for ln in output.splitlines()
                     if "not found" in ln.lower() or "unresolved" in ln.lower() or "error" in ln.lower()]
            raise InstallError("Maven resolution failed: " + ("\n".join(lines[-8:]) or output[-1500:]))
        jars = [Path(p) for p in out.read_text().strip().split(os.pathsep) if p.endswith(".jar")]
    if not jars:
        raise InstallError(f"Maven coordinates {coordinates} resolved to no jar.")
    return jars
