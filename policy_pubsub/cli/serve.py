"""``policy-pubsub serve``: run the server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from policy_pubsub import constants
from policy_pubsub.config import Settings

log = logging.getLogger("policy_pubsub")

SERVE_EXAMPLE = """\
examples:
  policy-pubsub serve
      SQLite file ./policy-pubsub.db and the embedded router on 127.0.0.1:6969
  policy-pubsub serve --port 8080 --database-url sqlite+aiosqlite:////var/lib/pp/store.db

Every flag can also be set as an environment variable: POLICY_PUBSUB_HOST, _PORT,
_DATABASE_URL, _ROUTER_URL, _MAX_BODY_BYTES, _RETENTION_SECONDS, _LOG_LEVEL.
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the policy-pubsub HTTP server until SIGTERM or Ctrl-C.",
        epilog=SERVE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help=f"address to listen on (default {constants.DEFAULT_HOST})")
    serve.add_argument("--port", type=int, help=f"port (default {constants.DEFAULT_PORT})")
    serve.add_argument(
        "--database-url",
        help="store: sqlite+aiosqlite:///PATH (default ./policy-pubsub.db) "
        "or postgresql+asyncpg://USER@HOST/DB",
    )
    serve.add_argument("--router", dest="router_url", help="message router (default: embedded)")
    serve.add_argument("--max-body-bytes", type=int, help="largest request body (default 10 MiB)")
    serve.add_argument(
        "--retention-seconds", type=float, help="how long topics keep messages (default 7 days)"
    )
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default info"
    )
    serve.set_defaults(run=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    flags = {
        name: value
        for name, value in vars(args).items()
        if name not in ("command", "run") and value is not None
    }
    try:
        settings = Settings(**flags)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            field = ".".join(str(p) for p in error["loc"])
            print(f"policy-pubsub: {field}: {error['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from policy_pubsub.server import build_server

    server = build_server(settings)
    # uvicorn handles SIGTERM itself while it serves, then re-sends the signal to the handler
    # that was in place before; a no-op there makes a graceful stop exit with status 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    try:
        asyncio.run(server.serve())
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C
        return 130
    if not server.started:
        print("policy-pubsub: the server did not start; the log above says why", file=sys.stderr)
        return 1
    return 0
