"""The tree is the architecture: every first-party import is read (ast) and checked against the
layer order core → storage → {serving, monitoring} → retraining → transport → app, against the
rule that training (export) may use only the server's core and storage, and for cycles."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.serving

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("server", "export", "clients", "dashboard", "minhos")

#: What each room may import besides itself (prefixes of module names).
ALLOWED: dict[str, tuple[str, ...]] = {
    "server.core": (),
    "server.storage": ("server.core",),
    "server.serving": ("server.core", "server.storage"),
    "server.monitoring": ("server.core", "server.storage"),
    "server.retraining": ("server.core", "server.storage", "server.monitoring"),
    "server.transport": (
        "server.core",
        "server.storage",
        "server.serving",
        "server.monitoring",
        "server.retraining",
        "minhos",
    ),
    # the assembly: server/app.py, server/main.py
    "server": ("server", "minhos"),
    "export": ("server.core", "server.storage"),
    "clients.client": ("minhos",),
    "clients": ("clients", "server", "export", "minhos"),
    "dashboard": ("clients.client", "minhos"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for top in ("server", "export", "clients", "dashboard"):
        for path in (ROOT / top).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports(path: Path, known: set[str]) -> Iterator[str]:
    """First-party modules imported anywhere in the file (top level, functions, TYPE_CHECKING)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FIRST_PARTY:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in FIRST_PARTY:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield sub if sub in known else node.module


def room(module: str) -> str:
    """The most specific key of ALLOWED that the module belongs to."""
    best = ""
    for key in ALLOWED:
        if (module == key or module.startswith(key + ".")) and len(key) > len(best):
            best = key
    assert best, f"{module} is in no room of the architecture"
    return best


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imports(path, known)) - {name} for name, path in found.items()}


def test_every_import_follows_the_layer_order() -> None:
    wrong = []
    for module, targets in graph().items():
        home = room(module)
        for target in targets:
            if within(target, home) or any(within(target, a) for a in ALLOWED[home]):
                continue
            wrong.append(f"{module} ({home}) imports {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_the_server_never_imports_training_or_clients() -> None:
    edges = [
        f"{m} -> {t}"
        for m, targets in graph().items()
        if within(m, "server")
        for t in targets
        if t.split(".")[0] in ("export", "clients", "dashboard")
    ]
    assert not edges


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_wrong_edge() -> None:
    """The rules are not vacuous: a storage module importing transport is an error."""
    assert room("server.storage.writer") == "server.storage"
    assert not any(within("server.transport.convert", a) for a in ALLOWED["server.storage"])
    assert room("clients.client") == "clients.client"
    assert not any(within("server.core.bars", a) for a in ALLOWED["clients.client"])
