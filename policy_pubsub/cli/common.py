"""What the commands that talk to a running server share: options, HTTP, errors and output.

Every such command takes ``--url``, ``--json`` and ``--timeout``, prints readable text by
default and the server's JSON answer with ``--json``, and on failure prints one line,
``policy-pubsub: <reason>``, to stderr and exits 1 (the server refused or could not be
reached) or 2 (bad usage or input).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias
from urllib.parse import quote

import httpx

from policy_pubsub import constants
from policy_pubsub.client.http import BearerAuth, HttpClient, Reply, TransientError
from policy_pubsub.exceptions import RequestRejected

DEFAULT_URL = f"http://{constants.DEFAULT_HOST}:{constants.DEFAULT_PORT}"
URL_ENV = "POLICY_PUBSUB_URL"
USER_ENV = "POLICY_PUBSUB_USER"
PASSWORD_ENV = "POLICY_PUBSUB_PASSWORD"
TOKEN_ENV = "POLICY_PUBSUB_TOKEN"
SECRET_ENV = "POLICY_PUBSUB_PAP_WEBHOOK_SECRET"
DEFAULT_TIMEOUT = 30.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

HELP_WIDTH = 90

EXIT_CODES = f"""\
The server is --url, else ${URL_ENV}, else {DEFAULT_URL}. Credentials: --user (or
${USER_ENV}) with the password in ${PASSWORD_ENV} (asked for on a terminal), or a token in
${TOKEN_ENV}; /pap requests are signed when ${SECRET_ENV} is set.
exit status: 0 done; 1 the server refused the request or could not be reached;
2 bad usage or input. Every failure is one line on stderr."""

Run = Callable[[argparse.Namespace], int]
# A string: argparse's subparser action is generic to type checkers only.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandError(Exception):
    """A command cannot go on: ``message`` is the one line to print, ``code`` the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CommandError):
    """Bad arguments or input files: nothing was sent, exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def add_command(
    commands: Commands, name: str, *, summary: str, description: str, example: str, run: Run
) -> argparse.ArgumentParser:
    """A subparser with the common options, a description and an epilog with ``example``."""
    parser = commands.add_parser(
        name,
        help=summary,
        # The raw formatter keeps the epilog's example as written; wrap the prose here.
        description=textwrap.fill(description, HELP_WIDTH),
        epilog=f"{example.rstrip()}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = parser.add_argument_group("common options")
    common.add_argument("--url", help=f"the server (env {URL_ENV}, default {DEFAULT_URL})")
    common.add_argument(
        "--json",
        action="store_true",
        help="print the server's JSON answer instead of text (one document per line for streams)",
    )
    common.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the server's answer (default {DEFAULT_TIMEOUT:g})",
    )
    common.add_argument(
        "--user",
        help=f"log in as this user (env {USER_ENV}); the password comes from ${PASSWORD_ENV} "
        "or a prompt",
    )
    parser.set_defaults(run=_reporting(run))
    return parser


def credentials(args: argparse.Namespace) -> tuple[str, str] | str | None:
    """``(user, password)`` for HTTP Basic, a bearer token, or None. Passwords and tokens
    come from the environment or a prompt, never from the command line (``ps`` shows that).
    """
    user = getattr(args, "user", None) or os.environ.get(USER_ENV)
    token = os.environ.get(TOKEN_ENV)
    if user and token:
        raise UsageError(f"give a user or ${TOKEN_ENV}, not both")
    if token:
        return token
    if not user:
        return None
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError(f"--user {user}: set ${PASSWORD_ENV} (no terminal to ask on)")
        password = getpass.getpass(f"password for {user}: ")
    return user, password


def httpx_auth(found: tuple[str, str] | str | None) -> httpx.Auth | None:
    """The credentials as an ``httpx.Auth``."""
    if found is None:
        return None
    if isinstance(found, str):
        return BearerAuth(found)
    return httpx.BasicAuth(*found)


def _reporting(run: Run) -> Run:
    def reporting(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except CommandError as exc:
            sys.stdout.flush()
            print(f"policy-pubsub: {exc.message}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            return 130  # Ctrl-C: the shell's status for SIGINT, without a traceback
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly, and keep the interpreter's
            # final flush of stdout from failing again on the way out.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK

    return reporting


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def server_url(args: argparse.Namespace) -> str:
    """``--url``, else ``$POLICY_PUBSUB_URL``, else the default; a UsageError if not http(s)."""
    # The command line is a client: the server's Settings object is not involved here.
    url: str = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url: {url!r} is not an http:// or https:// URL")
    return url.rstrip("/")


def segment(value: str) -> str:
    """``value`` quoted as one path segment, so an id can never reach another route."""
    return quote(value, safe="")


class Api:
    """The server, for a command: the shared ``HttpClient``'s requests made synchronously (on
    an event loop of its own), every failure a ``CommandError`` with one line to print.
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        auth: httpx.Auth | None = None,
        pap_secret: str | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._runner = asyncio.Runner()
        self._http = httpx.AsyncClient()
        self._client = HttpClient(
            self._http, url, timeout=timeout, auth=auth, pap_secret=pap_secret
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Api:
        return cls(
            server_url(args),
            args.timeout,
            auth=httpx_auth(credentials(args)),
            pap_secret=os.environ.get(SECRET_ENV) or None,
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._runner.run(self._http.aclose())
        finally:
            self._runner.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int | float] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Send one request; the answer if it is a 2xx, else a CommandError saying why."""
        limit = self.timeout if timeout is None else timeout
        try:
            return self._runner.run(
                self._client.request(method, path, body=body, params=params, timeout=limit)
            )
        except RequestRejected as exc:
            raise CommandError(f"{exc.status}: {exc.error}") from None
        except TransientError as exc:
            raise CommandError(self._failure(exc, method, path, limit)) from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).body

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, body=body, **kwargs).body

    def _failure(self, exc: TransientError, method: str, path: str, limit: float) -> str:
        if exc.kind == "unreachable":
            return f"cannot reach {self.url}: {exc.reason}"
        if exc.kind == "timeout":
            return f"no answer from {self.url} within {limit:g} s"
        if exc.kind == "status":
            return f"{exc.status}: {exc.error}"
        if exc.kind == "answer":
            return (
                f"{self.url} answered {method} {path} with something that is not JSON; "
                "is --url a policy-pubsub server?"
            )
        return f"{method} {self.url}{path} failed: {exc.reason}"


def parse_filters(texts: Sequence[str]) -> list[dict[str, Any]]:
    """Each ``--filter`` as a JSON object; a UsageError naming the first that is not one."""
    filters = []
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--filter {text!r} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise UsageError(
                f"--filter {text!r} must be a JSON object such as "
                '\'{"policy-id": ["onap.restart.tca"]}\''
            )
        filters.append(value)
    return filters


def print_json(value: Any, *, compact: bool = False) -> None:
    """One JSON document on stdout: indented, or on one line (for streams and scripts)."""
    if compact:
        print(json.dumps(value, separators=(",", ":"), ensure_ascii=False), flush=True)
    else:
        print(json.dumps(value, indent=2, ensure_ascii=False), flush=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, under upper-case headers."""
    lines = [[h.upper() for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 subscriber``, ``2 subscribers``; ``words`` for an irregular plural."""
    return f"{count} {word}" if count == 1 else f"{count} {words or word + 's'}"
