"""Where JVM artifacts (jars fetched by scripts/fetch-jvm-artifacts) are cached."""
from __future__ import annotations

import os
import re
from pathlib import Path


def jvm_cache_dir() -> Path:
    """The jar cache: $BRICKYARD_JVM_CACHE, else ~/.cache/brickyard/jvm (same as the fetch script)."""
    value = os.environ.get("BRICKYARD_JVM_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "brickyard" / "jvm"


def _version_key(path: Path, prefix: str) -> tuple:
    # Compare versions numerically (2.10.0 > 2.9.1); non-numeric parts sort as text.
    rest = path.stem[len(prefix):].lstrip("-")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-_]", rest))


def jar_path(artifact_prefix: str) -> Path:
    """The newest cached jar whose name starts with `artifact_prefix` + '-' + a version digit.

    Raises FileNotFoundError naming the cache and the command that fills it.
    """
    cache = jvm_cache_dir()
    pattern = re.compile(re.escape(artifact_prefix) + r"-\d[^/]*\.jar$")
    found = [p for p in cache.glob(f"{artifact_prefix}-*.jar") if pattern.match(p.name)] if cache.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"no {artifact_prefix}-<version>.jar in {cache}; list it in jvm-artifacts.txt and run "
            "scripts/fetch-jvm-artifacts (./dev setup does)"
        )
    return max(found, key=lambda p: _version_key(p, artifact_prefix))
