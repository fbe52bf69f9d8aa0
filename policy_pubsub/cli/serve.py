"""``policy-pubsub serve``: run the server."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from policy_pubsub import constants, logs
from policy_pubsub.auth import AuthFileError
from policy_pubsub.config import Settings

log = logging.getLogger("policy_pubsub")

SERVE_EXAMPLE = """\
examples:
  policy-pubsub serve
      SQLite file ./policy-pubsub.db and the embedded router on 127.0.0.1:6969
  policy-pubsub serve --port 8080 --database-url sqlite+aiosqlite:////var/lib/pp/store.db
  policy-pubsub serve --pap-topic embedded --pdp-group defaultGroup
      one PDP of an ONAP PAP whose DMaaP topic POLICY-PDP-PAP is this server's /events
  policy-pubsub serve --host 0.0.0.0 --auth-file /etc/policy-pubsub/auth.toml \
      --ssl-certfile cert.pem --ssl-keyfile key.pem
      on every address, with users and roles (format: examples/auth.toml), over HTTPS

Every flag can also be set as an environment variable: POLICY_PUBSUB_HOST, _PORT,
_DATABASE_URL, _ROUTER_URL, _MAX_BODY_BYTES, _RETENTION_SECONDS, _LOG_LEVEL, _AUTH_FILE.
The PAP webhook's shared secret is only a variable: POLICY_PUBSUB_PAP_WEBHOOK_SECRET (with
_PAP_SIGNATURE_WINDOW_SECONDS, 300, and _PAP_SIGNATURE_LEGACY: README "Security").
Logs, limits and expiry: POLICY_PUBSUB_LOG_FORMAT, _EXPIRE_STALE_AFTER_SECONDS,
_MAX_HELD_POLLS, _MAX_EMPTY_POLLS_PER_MINUTE; the other limits are variables only (README
"Observability and limits"): _MAX_POLICIES_PER_PUSH, _MAX_FILTERS_PER_SUBSCRIPTION,
_MAX_IDS_PER_FILTER, _MAX_MESSAGE_BYTES, _MAX_HELD_POLLS_PER_GROUP, _MIN_POLL_TIMEOUT_MS,
_MAX_POLL_TIMEOUT_MS, _RELAY_STUCK_SECONDS, _STALE_CHECK_INTERVAL_SECONDS.
ONAP's PAP: POLICY_PUBSUB_PAP_TOPIC_URL, _PDP_NAME, _PDP_GROUP, _PDP_TYPE, and as variables
only _PAP_CONSUMER_GROUP, _PDP_HEARTBEAT_MS, _PAP_POLL_TIMEOUT_MS.
Several replicas (README "Several replicas"): POLICY_PUBSUB_CHANGE_LOG_KEEP_SECONDS (3600);
a frozen replica's sessions end after _IDLE_TRANSACTION_TIMEOUT_SECONDS (60) idle in a
transaction, its leader locks after _LEADER_LOCK_TIMEOUT_SECONDS (20, PostgreSQL 14+).
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
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text (default), or json: one JSON object a line, one line per request",
    )
    serve.add_argument(
        "--expire-stale-after",
        dest="expire_stale_after_seconds",
        type=float,
        metavar="SECONDS",
        help="unsubscribe subscriptions whose topic nobody read for this long (default: never)",
    )
    serve.add_argument(
        "--max-held-polls", type=int, help="most long-polls held at once (default 20000)"
    )
    serve.add_argument(
        "--max-empty-polls-per-minute",
        type=int,
        help="empty polls a consumer may make a minute before a 429 (default 120; 0: no cap)",
    )
    serve.add_argument("--auth-file", help="users and roles (TOML, see examples/auth.toml)")
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve a non-loopback address without --auth-file (a proxy authenticates)",
    )
    serve.add_argument("--ssl-certfile", help="TLS certificate chain (PEM); with --ssl-keyfile")
    serve.add_argument("--ssl-keyfile", help="TLS private key (PEM)")
    pap = serve.add_argument_group(
        "ONAP PAP",
        "join an ONAP PAP's PDP group over POLICY-PDP-PAP (README: Running under ONAP's PAP)",
    )
    pap.add_argument(
        "--pap-topic",
        "--pap-topic-url",
        dest="pap_topic_url",
        metavar="URL",
        help="embedded[/TOPIC] (this server's /events) or dmaap+http(s)://HOST:PORT[/TOPIC] "
        "(default topic POLICY-PDP-PAP; default: no PAP)",
    )
    pap.add_argument(
        "--pdp-name",
        help="the PDP's unique name (default: policy-pubsub-UUID, the same for every start "
        "and replica of the store)",
    )
    pap.add_argument(
        "--pdp-group", help=f"PDP group to join (default {constants.DEFAULT_PDP_GROUP})"
    )
    pap.add_argument("--pdp-type", help=f"PDP type (default {constants.PDP_TYPE})")
    serve.set_defaults(run=serve_command)


def refusal(settings: Settings) -> str | None:
    """Why the server must not start with these settings (one line), or None."""
    if not settings.auth_file and not settings.insecure and not _loopback(settings.host):
        return (
            f"refusing to serve {settings.host} without authentication: give --auth-file "
            "(see examples/auth.toml), or --insecure if a proxy in front authenticates"
        )
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        return "--ssl-certfile and --ssl-keyfile go together: give both or neither"
    for path in (settings.ssl_certfile, settings.ssl_keyfile):
        if path is not None and not Path(path).is_file():
            return f"TLS file {path} does not exist"
    return None


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    logs.configure(settings.log_level, settings.log_format)
    reason = refusal(settings)
    if reason is not None:
        print(f"policy-pubsub: {reason}", file=sys.stderr)
        return 2
    if not settings.auth_file and not _loopback(settings.host):
        log.warning("serving %s without authentication (--insecure)", settings.host)
    from policy_pubsub.server import build_server

    try:
        server = build_server(settings, access_log=False)  # api.middleware.RequestMiddleware logs
    except AuthFileError as exc:
        print(f"policy-pubsub: {exc.message}", file=sys.stderr)
        return 2
    # uvicorn handles SIGTERM itself while it serves, then re-sends the signal to the handler
    # that was in place before; a no-op there makes a graceful stop exit with status 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    try:
        # uvicorn's own run, not asyncio.run: it takes the event loop from the config, so
        # uvloop serves when installed (a dependency; see BENCHMARKS.md for the gain).
        server.run()
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C
        return 130
    if not server.started:
        print("policy-pubsub: the server did not start; the log above says why", file=sys.stderr)
        return 1
    return 0
