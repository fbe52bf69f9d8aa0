"""The SDK's own distribution (sdk/): it holds the SDK and what the SDK imports, and nothing
that needs the server's dependencies.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SDK = ROOT / "sdk"
SDK_PROJECT = tomllib.loads((SDK / "pyproject.toml").read_text())
SERVER_PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ALLOWED_THIRD_PARTY = {"httpx"}


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
    library: never a server module (service, store, api, models, ...) or a server dependency.
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
                assert allowed or top == "__future__", f"{module} imports {name}"


def test_the_sdk_depends_on_httpx_alone_and_the_server_includes_it() -> None:
    """The SDK distribution asks for httpx only, and the server's wheel (the whole package)
    holds the same modules, so ``pip install .`` still gives the SDK.
    """
    assert [requirement_name(r) for r in SDK_PROJECT["project"]["dependencies"]] == ["httpx"]
    assert "httpx" in {requirement_name(r) for r in SERVER_PROJECT["project"]["dependencies"]}
    assert SERVER_PROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        "policy_pubsub"
    ]
    assert SDK_PROJECT["project"]["version"] == SERVER_PROJECT["project"]["version"]
