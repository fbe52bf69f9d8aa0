"""``policy-pubsub push``: deploy policies from files, as a PAP would.

Every file is read and checked before anything is sent. The policies of all files then go in
one ``POST /pap/v1/policies`` (deployed all or none), or one per ``--batch-size`` policies;
after them each PDP_UPDATE message goes, as it is, to ``POST /pap/v1/pdp-update``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import yaml

from policy_pubsub.cli.common import (
    Api,
    CommandError,
    Commands,
    UsageError,
    add_command,
    plural,
    positive_int,
    print_json,
)
from policy_pubsub.cli.templates import Loader, TemplateError, template_policies
from policy_pubsub.policy_identity import policy_id, version_label

SUFFIXES = (".json", ".yaml", ".yml")
# From this many files, or with more than one batch, a terminal shows a progress line.
MANY_FILES = 10
# Past this many unchanged policies, the text output counts them instead of listing them.
LIST_UNCHANGED = 10

PUSH_EXAMPLE = """\
examples:
  policy-pubsub push examples/policies/onap.restart.tca.json
      deployed onap.restart.tca 1.0.0
      revision 3; 1 subscriber notified
  policy-pubsub push examples/policies          every *.json, *.yaml, *.yml below it, sorted
  policy-pubsub push policies/ --batch-size 500   one atomic request per 500 policies

A file holds one ToscaPolicy, a list of them, {"policies": [...]}, a TOSCA service template
(topology_template.policies, in YAML or JSON), or an ONAP PDP_UPDATE message. YAML is read as
ONAP's policy-api reads it, and a service template's policies are sent as policy-api stores
them: named by their key, version 0.0.0 if they give none, metadata.policy-id and
policy-version set to that name and version. The policies of all files are deployed in one
request, all or none, unless --batch-size splits them; then each PDP_UPDATE is sent as it is,
in the order given. A policy-id given twice in different files must be identical.
A file that cannot be read or used stops the command before anything is sent (exit 2)."""


def register(commands: Commands) -> None:
    push = add_command(
        commands,
        "push",
        summary="deploy policies from JSON or YAML files and directories",
        description="Deploy ToscaPolicy files, TOSCA service templates and PDP_UPDATE messages. "
        "Prints what was deployed, the store revision and how many subscribers were notified; "
        "with --json, the server's answer to each request, one per line.",
        example=PUSH_EXAMPLE,
        run=push_command,
    )
    push.add_argument("paths", nargs="+", metavar="FILE|DIR", help="files or directories")
    push.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="send the policies in requests of N, each atomic (default: all in one)",
    )


Item = tuple[dict[str, Any], str]  # a policy or a PDP_UPDATE, and where it was read


@dataclass
class Loaded:
    """What the files hold, in order."""

    policies: list[Item] = field(default_factory=list)
    updates: list[Item] = field(default_factory=list)


@dataclass
class Outcome:
    """The answers received so far, reported even when a later request fails."""

    sent: list[Item] = field(default_factory=list)
    policy_answers: list[dict[str, Any]] = field(default_factory=list)
    update_answers: list[tuple[dict[str, Any], str]] = field(default_factory=list)


class Progress:
    """One status line on a terminal, rewritten in place, and wiped when the work is done."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0

    def show(self, text: str) -> None:
        if not self._enabled:
            return
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        text = text[: (columns or 80) - 1]  # a wrapped line could not be rewritten
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)


def push_command(args: argparse.Namespace) -> int:
    files = collect(args.paths)
    tty = sys.stderr.isatty()
    outcome = Outcome()
    try:
        with Progress(sys.stderr, tty and len(files) >= MANY_FILES) as progress:
            loaded = Loaded()
            for number, path in enumerate(files, 1):
                progress.show(f"reading {number}/{len(files)} {path}")
                for document, origin in read_documents(path):
                    classify(document, origin, loaded)
            policies = unique(loaded.policies)
            if not policies and not loaded.updates:
                raise UsageError("nothing to push: the files hold no policy and no PDP_UPDATE")
            size = args.batch_size or max(len(policies), 1)
            batches = [policies[i : i + size] for i in range(0, len(policies), size)]
        many = len(files) >= MANY_FILES or len(batches) > 1
        with Progress(sys.stderr, tty and many) as progress, Api.from_args(args) as api:
            send(api, batches, loaded.updates, progress, outcome)
    finally:
        report(outcome, as_json=args.json)
    return 0


def collect(paths: Sequence[str]) -> list[Path]:
    """The files named, and the *.json, *.yaml, *.yml files below each directory, sorted."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UsageError(f"{name}: the directory holds no .json, .yaml or .yml file")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"{name}: no such file or directory")
    return files


def read_documents(path: Path) -> list[tuple[Any, str]]:
    """The JSON document, or each YAML document, of a file, with where it was read."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix.lower() == ".json":
        try:
            documents = [json.loads(text, parse_constant=_no_constant)]
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"{path}: not valid JSON: {exc}") from None
    else:
        try:
            documents = [d for d in yaml.load_all(text, Loader=Loader) if d is not None]
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML: {_yaml_reason(exc)}") from None
        except RecursionError:
            raise UsageError(f"{path}: not valid YAML: nested too deeply") from None
        try:
            json.dumps(documents, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{path}: holds a value JSON cannot carry: {exc}") from None
    if not documents:
        raise UsageError(f"{path}: the file holds nothing")
    if len(documents) == 1:
        return [(documents[0], str(path))]
    return [(d, f"{path} (document {n})") for n, d in enumerate(documents, 1)]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _yaml_reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def classify(document: Any, origin: str, loaded: Loaded) -> None:
    """Add the policies or the PDP_UPDATE message a document holds to ``loaded``."""
    if isinstance(document, dict) and "messageName" in document:
        if document["messageName"] != "PDP_UPDATE":
            raise UsageError(
                f"{origin}: a {document['messageName']!r} message cannot be pushed, "
                "only a PDP_UPDATE"
            )
        loaded.updates.append((document, origin))
        return
    if isinstance(document, dict) and "tosca_definitions_version" in document:
        try:
            items: Any = template_policies(document)
        except TemplateError as exc:
            raise UsageError(f"{origin}: {exc}") from None
    elif isinstance(document, dict) and "policies" in document:
        items = document["policies"]
        if not isinstance(items, list):
            raise UsageError(f"{origin}: 'policies' must be a list of ToscaPolicy objects")
    elif isinstance(document, list):
        items = document
    elif isinstance(document, dict):
        items = [document]
    else:
        raise UsageError(
            f"{origin}: expected a ToscaPolicy object, a list of them, "
            '{"policies": [...]}, a service template or a PDP_UPDATE, '
            f"not {type(document).__name__}"
        )
    for index, item in enumerate(items, 1):
        where = origin if len(items) == 1 else f"{origin} (policy {index})"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: not a ToscaPolicy object")
        loaded.policies.append((item, where))


def unique(items: list[Item]) -> list[Item]:
    """Each policy once: a policy-id given again must be identical, and is sent once."""
    seen: dict[str, Item] = {}
    result = []
    for policy, origin in items:
        pid = policy_id(policy)
        if pid is not None and pid in seen:
            first, first_origin = seen[pid]
            if first != policy:
                raise UsageError(
                    f"policy-id {pid!r} is given twice and differs: "
                    f"in {first_origin} and in {origin}"
                )
            continue
        if pid is not None:
            seen[pid] = (policy, origin)
        result.append((policy, origin))
    return result


def send(
    api: Api,
    batches: list[list[Item]],
    updates: list[Item],
    progress: Progress,
    outcome: Outcome,
) -> None:
    total = sum(len(batch) for batch in batches)
    for number, batch in enumerate(batches, 1):
        progress.show(
            f"pushing batch {number}/{len(batches)} "
            f"({len(outcome.sent) + len(batch)}/{total} policies)"
        )
        try:
            answer = api.post("/pap/v1/policies", {"policies": [p for p, _ in batch]})
        except CommandError as exc:
            raise CommandError(_explain(exc.message, batch, number, len(batches))) from None
        outcome.sent.extend(batch)
        outcome.policy_answers.append(answer)
    for number, (update, origin) in enumerate(updates, 1):
        progress.show(f"sending PDP_UPDATE {number}/{len(updates)} {origin}")
        try:
            status = api.post("/pap/v1/pdp-update", update)
        except CommandError as exc:
            note = " (the policies before it were deployed)" if outcome.sent else ""
            raise CommandError(f"{origin}: {exc.message}{note}") from None
        outcome.update_answers.append((status, origin))
        result = status.get("response", {}).get("responseStatus") if status else None
        if result != "SUCCESS":
            raise CommandError(f"{origin}: the server answered the PDP_UPDATE with {result!r}")


_POLICY_INDEX = re.compile(r"\bpolicies\[(\d+)\]")


def _explain(message: str, batch: list[Item], number: int, batches: int) -> str:
    """The server's reason, with the file of the policy it names and what was deployed."""
    found = _POLICY_INDEX.search(message)
    if found and int(found.group(1)) < len(batch):
        message += f" (that policy is from {batch[int(found.group(1))][1]})"
    if batches > 1:
        done = f"batches 1-{number - 1} were" if number > 2 else "batch 1 was"
        message += f"; batch {number} of {batches} failed" + (
            f", {done} deployed" if number > 1 else ", nothing was deployed"
        )
    return message


def report(outcome: Outcome, *, as_json: bool) -> None:
    """What was deployed, at which revision, and how many subscribers were notified."""
    if as_json:
        for answer in outcome.policy_answers:
            print_json(answer, compact=True)
        for status, _ in outcome.update_answers:
            print_json(status, compact=True)
        return
    if outcome.policy_answers:
        deployed = [d for answer in outcome.policy_answers for d in answer.get("deployed", [])]
        changed = {d.get("policy-id") for d in deployed}
        for ident in deployed:
            print(f"deployed {ident.get('policy-id')} {ident.get('policy-version')}")
        unchanged = [p for p, _ in outcome.sent if policy_id(p) not in changed]
        if len(unchanged) <= LIST_UNCHANGED:
            for policy in unchanged:
                print(f"unchanged {policy_id(policy)} {version_label(policy)} (already deployed)")
        else:
            count = plural(len(unchanged), "policy", "policies")
            print(f"unchanged: {count} already deployed as given")
        notified = sum(int(answer.get("notified", 0)) for answer in outcome.policy_answers)
        requests = len(outcome.policy_answers)
        after = f" after {requests} requests" if requests > 1 else ""
        revision = outcome.policy_answers[-1].get("revision")
        print(f"revision {revision}{after}; {plural(notified, 'subscriber')} notified")
    for status, origin in outcome.update_answers:
        response = status.get("response", {})
        print(
            f"{origin}: PDP_UPDATE {response.get('responseStatus')}: "
            f"{response.get('responseMessage')}"
        )
    sys.stdout.flush()
