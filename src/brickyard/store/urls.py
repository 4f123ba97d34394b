"""Database URLs: the workspace's SQLAlchemy URL, and the forms MLflow and the Hive metastore need."""
from __future__ import annotations

from urllib.parse import quote

from sqlalchemy.engine import URL, make_url

PSYCOPG = "postgresql+psycopg"


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def sqlalchemy_url(url: str) -> str:
    """The URL with a driver SQLAlchemy can load: plain postgresql:// (and postgres://) use psycopg 3,
    the driver installed with Brickyard (SQLAlchemy's default for them is psycopg2)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"{PSYCOPG}://{rest}"
    return url


def with_search_path(url: str, schema: str) -> str:
    """A PostgreSQL URL whose connections use `schema` (libpq `options=-csearch_path=...`)."""
    parsed = make_url(sqlalchemy_url(url))
    query = dict(parsed.query)
    query["options"] = f"-csearch_path={schema}"
    return parsed.set(query=query).render_as_string(hide_password=False)


def jdbc_postgres(url: str, schema: str) -> tuple[str, str, str]:
    """(jdbc:postgresql://host:port/db?currentSchema=schema, user, password) for a PostgreSQL URL."""
    parsed: URL = make_url(sqlalchemy_url(url))
    if not is_postgres(parsed.drivername):
        raise ValueError(f"not a PostgreSQL URL: {parsed.drivername}")
    host = parsed.host or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parsed.port}" if parsed.port else ""
    params = {"currentSchema": schema}
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name"):
        value = parsed.query.get(key)
        if isinstance(value, str):
            params["loginTimeout" if key == "connect_timeout" else
                   "ApplicationName" if key == "application_name" else key] = value
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return (f"jdbc:postgresql://{host}{port}/{quote(parsed.database or '', safe='')}?{query}",
            parsed.username or "", parsed.password or "")
