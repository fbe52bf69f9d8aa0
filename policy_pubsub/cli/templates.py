"""ONAP's policy files read as ONAP's policy-api reads them.

policy-api reads YAML with snakeyaml, turns it into JSON, and decodes that with gson into
onap/policy-models' ``ToscaServiceTemplate``; storing its policies (``JpaToscaPolicy``), it
names each one and rewrites its metadata. ``push`` sends what policy-api would have stored, so
that what the server deploys is what an ONAP PAP would have sent:

- YAML: snakeyaml resolves no ``=`` value tag (PyYAML's YAML 1.1 resolver does, and then has
  no constructor for it: ``operator: [=]`` in ONAP's optimization policies is the string
  ``"="``), and a date stays the text given, as it arrives on the wire.
- ``topology_template.policies`` is a list of ``{name: policy}`` maps. The key is the policy's
  name; a ``name`` inside that differs from it is refused, as policy-api refuses it. The
  version is ``version``, or ``0.0.0`` when there is none (policy-api's null version).
- ``metadata.policy-id`` and ``metadata.policy-version`` are set to that name and version,
  replacing what the file says (policy-api has done so since Frankfurt; El Alto's wrote the
  major version alone). So ONAP files that give two policies one ``metadata.policy-id`` name
  two policies, as in ONAP.
- A name and version given twice in one template: the later one is kept, in the place of the
  first, as policy-api's map of policies keeps it.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["NULL_VERSION", "Loader", "TemplateError", "template_policies"]

NULL_VERSION = "0.0.0"  # policy-api's version of a policy that gives none


class TemplateError(ValueError):
    """A service template policy-api would refuse; the message says why."""


class Loader(yaml.SafeLoader):
    """YAML 1.1 as snakeyaml resolves it: no ``=`` value tag, and no timestamps (a date in a
    policy goes on the wire as the text given).
    """


Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if not tag.endswith((":timestamp", ":value"))
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def template_policies(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The policies of a TOSCA service template as policy-api stores them (module docstring);
    ``TemplateError`` for a template it would refuse.
    """
    topology = template.get("topology_template")
    entries = topology.get("policies") if isinstance(topology, dict) else None
    if entries is None:
        raise TemplateError("the service template has no topology_template.policies")
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise TemplateError("topology_template.policies must be a list of {name: policy} maps")
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        for key, body in entry.items():
            if not isinstance(body, dict):
                raise TemplateError(f"policy {key!r} of the service template is not a map")
            policy = _as_stored(str(key), body)
            stored[(policy["name"], policy["version"])] = policy
    return list(stored.values())


def _as_stored(key: str, body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("name")
    if name not in (None, "") and str(name) != key:
        raise TemplateError(
            f"policy {key!r} of the service template has the name {name!r}: "
            "its name must be its key (ONAP's policy-api refuses it too)"
        )
    version = body.get("version")
    version = NULL_VERSION if version in (None, "") else str(version)
    metadata = body.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    metadata["policy-id"] = key
    metadata["policy-version"] = version
    return {**body, "name": key, "version": version, "metadata": metadata}
