"""The package layout the design asks for: the core (daas_hub/) imports neither JupyterHub
nor the three plug-in packages that build on it."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "daas_hub"
FORBIDDEN = ("jupyterhub", "daas_hub.spawners", "daas_hub.authenticators", "daas_hub.proxies",
             "kubespawner", "batchspawner", "oauthenticator")


def imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level and node.module:
            # relative: resolve against the module's package inside daas_hub
            package = path.relative_to(CORE.parent).parent.parts[: len(path.relative_to(CORE.parent).parent.parts)
                                                                  - (node.level - 1) or None]
            yield ".".join([*package, node.module])


def test_the_core_imports_no_jupyterhub_and_no_plug_in_package():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for name in imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                offenders.append(f"{path.relative_to(CORE.parent)}: {name}")
    assert offenders == []
