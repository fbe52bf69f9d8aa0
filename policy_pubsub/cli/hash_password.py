"""``policy-pubsub hash-password``: print a password hash for the auth file's ``password_hash``."""

from __future__ import annotations

import argparse
import getpass
import sys

from policy_pubsub.auth import hash_password

HASH_PASSWORD_EXAMPLE = """\
examples:
  policy-pubsub hash-password
      asks for the password twice (not echoed), prints scrypt$16384$8$1$<salt>$<hash>
  printf '%s\\n' "$PAP_PASSWORD" | policy-pubsub hash-password
      reads one line from stdin when it is not a terminal

Put the hash in the auth file: [users.pap] password_hash = "scrypt$..." roles = ["pap"].
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "hash-password",
        help="print a password hash for the auth file",
        description="Print an scrypt hash of a password, for password_hash in the auth file.",
        epilog=HASH_PASSWORD_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.set_defaults(run=hash_password_command)


def hash_password_command(args: argparse.Namespace) -> int:
    password = _from_terminal() if sys.stdin.isatty() else _from_pipe()
    if password is None:
        return 2
    print(hash_password(password))
    return 0


def _from_terminal() -> str | None:
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        return _fail("the two passwords differ; nothing was printed")
    return first if first else _fail("the password is empty")


def _from_pipe() -> str | None:
    text = sys.stdin.read()
    password = text.removesuffix("\n").removesuffix("\r")
    if "\n" in password or "\r" in password:
        return _fail("stdin holds more than one line; give the password alone")
    return password if password else _fail("stdin holds no password")


def _fail(message: str) -> str | None:
    """Say what is wrong on stderr; None, so that nothing is hashed."""
    print(f"policy-pubsub: {message}", file=sys.stderr)
    return None
