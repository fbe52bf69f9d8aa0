"""The SDK's own distribution (sdk/): it holds the SDK and what the SDK imports, and nothing
that needs the server's dependencies; aio-pika only in its ``amqp`` extra, imported by one
module that nothing else imports unless ``router_url`` is ``amqp://``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SDK = ROOT / "sdk"
SDK_PROJECT = tomllib.loads((SDK / "pyproject.toml").read_text())
SERVER_PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ALLOWED_THIRD_PARTY = {"httpx"}
# The modules of the "amqp" extra, and the one SDK module allowed to import them.
AMQP_MODULE = "policy_pubsub.client.amqp"
AMQP_THIRD_PARTY = {"aio_pika"}


def requirement_name(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503)."""
    found = re.match(r"[A-Za-z0-9._-]+", requirement)
    if found is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", found.group()).lower()


def _shipped() -> dict[str, Path]:
    """Module name -> source file, for every module the SDK wheel holds."""
    included = SDK_PROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    modules: dict[str, Path] = {}
    for source, target in included.items():
        path = (SDK / source).resolve()
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            inside = Path(target) / file.relative_to(path) if path.is_dir() else Path(target)
            parts = inside.with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = file
    return modules


def _is_module(name: str) -> bool:
    """Whether ``policy_pubsub.a.b`` is a module or package of the checkout."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(file: Path) -> set[str]:
    """Every module ``file`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{file}: a relative import; the SDK uses absolute ones")
            base = node.module or ""
            found.add(base)
            # ``from policy_pubsub import constants`` imports a module, not only a name.
            found.update(
                f"{base}.{alias.name}"
                for alias in node.names
                if base.startswith("policy_pubsub") and _is_module(f"{base}.{alias.name}")
            )
    return found


def test_the_sdk_modules_import_only_the_sdk_httpx_and_the_standard_library() -> None:
    """Each module the SDK wheel ships imports other shipped modules, httpx, or the standard
    library: never a server module (service, store, api, models, ...) or a server dependency;
    aio-pika only in the AMQP consumer.
    """
    shipped = _shipped()
    assert "policy_pubsub.client" in shipped and "policy_pubsub.client.subscriber" in shipped
    for module, file in shipped.items():
        for name in _imports(file):
            top = name.partition(".")[0]
            if top == "policy_pubsub":
                assert name in shipped, f"{module} imports {name}, which the SDK does not ship"
            else:
                allowed = top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY
                allowed = allowed or (module == AMQP_MODULE and top in AMQP_THIRD_PARTY)
                assert allowed or top == "__future__", f"{module} imports {name}"


def test_the_sdk_depends_on_httpx_alone_and_the_server_includes_it() -> None:
    """The SDK distribution asks for httpx only, aio-pika in its ``amqp`` extra alone, and the
    server's wheel (the whole package) holds the same modules and both dependencies, so
    ``pip install .`` still gives the SDK, AMQP consumer included.
    """
    assert [requirement_name(r) for r in SDK_PROJECT["project"]["dependencies"]] == ["httpx"]
    extras = SDK_PROJECT["project"]["optional-dependencies"]
    assert {name: [requirement_name(r) for r in found] for name, found in extras.items()} == {
        "amqp": ["aio-pika"]
    }
    server = {requirement_name(r) for r in SERVER_PROJECT["project"]["dependencies"]}
    assert {"httpx", "aio-pika"} <= server
    assert SERVER_PROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        "policy_pubsub"
    ]
    assert SDK_PROJECT["project"]["version"] == SERVER_PROJECT["project"]["version"]


def test_without_the_amqp_extra_the_sdk_works_over_http_and_names_the_extra_for_amqp() -> None:
    """With aio-pika absent, every SDK module but the AMQP consumer imports and a subscriber
    over HTTP is made without importing it; ``router_url="amqp://..."`` raises ImportError
    naming the extra.
    """
    modules = sorted(name for name in _shipped() if name != AMQP_MODULE)
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for blocked in ("aio_pika", "aiormq", "pamqp"):
            sys.modules[blocked] = None  # as if not installed
        for name in {modules!r}:
            importlib.import_module(name)
        from policy_pubsub.client import PolicySubscriber
        options = dict(subscriber_id="s", subscriber_topic="t", policy_filters=[{{"p": 1}}])
        PolicySubscriber("http://127.0.0.1:6969", **options)
        assert {AMQP_MODULE!r} not in sys.modules
        try:
            PolicySubscriber("http://127.0.0.1:6969", router_url="amqp://h/", **options)
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'policy-pubsub-client[amqp]'" in done.stdout
