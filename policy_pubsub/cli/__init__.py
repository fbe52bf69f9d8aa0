"""The ``policy-pubsub`` command: ``serve``, and the commands that talk to a running server.

Each command lives in a module of this package with a ``register(commands)`` function that
adds its subparser and sets ``run`` to the function that carries it out.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

COMMAND_MODULES = ("serve", "push", "operator", "dead_letters", "watch", "hash_password")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="policy-pubsub",
        description="A durable publish/subscribe server for policies (ONAP PDP compatible). "
        "Run `policy-pubsub COMMAND --help` for a command's options and an example.",
    )
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"policy_pubsub.cli.{name}").register(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


__all__ = ["main", "parser"]
