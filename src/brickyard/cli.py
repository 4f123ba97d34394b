"""The `brickyard` command."""
from __future__ import annotations

import argparse
import configparser
import logging
import os
import sys
from pathlib import Path

import uvicorn

from brickyard.settings import Settings


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("home", "host", "port"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def add_profile(cfg_path: Path, host: str, token: str, profile: str = "brickyard") -> str:
    """Add a profile to ~/.databrickscfg; an existing profile is never overwritten."""
    parser = configparser.ConfigParser()
    if cfg_path.exists():
        parser.read(cfg_path)
    if parser.has_section(profile):
        return f"Profile [{profile}] already exists in {cfg_path}; left unchanged."
    lines = [f"\n[{profile}]\n", f"host  = {host}\n", f"token = {token}\n"]
    fd = os.open(cfg_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.writelines(lines)
    return f"Added profile [{profile}] to {cfg_path} (use: databricks --profile {profile} ...)."


def cmd_up(args: argparse.Namespace) -> int:
    from brickyard.app import create_app
    from brickyard.bootstrap import bootstrap
    from brickyard.context import open_workspace

    settings = _settings_from(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ws = open_workspace(settings)
    first = bootstrap(ws)
    host = settings.base_url
    print(f"Brickyard workspace {ws.workspace_id} at {host}  (home: {settings.home})", flush=True)
    if first is not None:
        print("\nFirst start: created the admin user and its first personal access token.")
        print("It is shown only this once; keep it somewhere safe.\n")
        print(f"  export DATABRICKS_HOST={host}")
        print(f"  export DATABRICKS_TOKEN={first.token}\n")
        print(f"  web login: {first.user_name} / {first.password}\n", flush=True)
        cfg = Path(os.environ.get("DATABRICKS_CONFIG_FILE", Path.home() / ".databrickscfg"))
        if args.profile == "yes" or (args.profile == "ask" and sys.stdin.isatty() and _ask(
                f"Add a [brickyard] profile to {cfg}? [y/N] ")):
            print(add_profile(cfg, host, first.token), flush=True)
    app = create_app(workspace=ws)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
        access_log=args.access_log, timeout_graceful_shutdown=10, lifespan="on",
    )
    server = _Server(config)
    server.run()  # SIGINT/SIGTERM: stop accepting, finish in-flight requests, exit 0
    ws.close()
    print("Brickyard workspace stopped.", flush=True)
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the stop signal after a graceful shutdown."""

    def handle_exit(self, sig, frame):  # noqa: ANN001, ANN201
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def _ask(prompt: str) -> bool:
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_rotate_master_key(args: argparse.Namespace) -> int:
    from brickyard.services.keys import rotate_master_key

    settings = _settings_from(args)
    count = rotate_master_key(settings)
    print(f"Master key rotated; re-encrypted {count} stored values. The new key is in "
          f"{settings.master_key_file}.")
    if settings.master_key:
        print("BRICKYARD_MASTER_KEY is set: update it to the new key before the next start.")
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from brickyard.context import open_workspace

    ws = open_workspace(_settings_from(args))
    with ws.store.session() as sess:
        user = ws.services["users"].create(sess, args.user_name, is_admin=args.admin,
                                           password=args.password)
        print(f"Created user {user.user_name} (id {user.id}).")
    ws.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brickyard", description="A self-hosted Databricks-compatible workspace.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--home", help="workspace home folder (BRICKYARD_HOME, default ~/.brickyard)")

    up = sub.add_parser("up", help="run the workspace in the foreground")
    common(up)
    up.add_argument("--host", help="address to listen on (BRICKYARD_HOST, default 127.0.0.1)")
    up.add_argument("--port", type=int, help="port (BRICKYARD_PORT, default 8700)")
    up.add_argument("--profile", choices=("ask", "yes", "no"), default="ask",
                    help="add a [brickyard] profile to ~/.databrickscfg on first start")
    up.add_argument("--access-log", action="store_true", help="log every request")
    up.set_defaults(func=cmd_up)

    admin = sub.add_parser("admin", help="administration commands")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    rot = admin_sub.add_parser("rotate-master-key", help="re-encrypt everything under a new master key")
    common(rot)
    rot.set_defaults(func=cmd_rotate_master_key)
    cu = admin_sub.add_parser("create-user", help="create a user")
    common(cu)
    cu.add_argument("user_name")
    cu.add_argument("--admin", action="store_true")
    cu.add_argument("--password")
    cu.set_defaults(func=cmd_create_user)
    from brickyard.jupyter.launch import add_parser as add_jupyter

    add_jupyter(sub)
    from brickyard.serving.export import add_parser as add_serving

    add_serving(sub)
    from brickyard.demo import add_parser as add_demo

    add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from brickyard.errors import BrickyardError

    try:
        return args.func(args)
    except BrickyardError as exc:
        print(f"error: {exc.error_code}: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
