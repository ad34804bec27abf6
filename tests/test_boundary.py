"""The trust boundary, as the tree draws it: what runs in the locked-down worker imports nothing else.

The worker side is `rlm_mcp/worker/` plus the few stdlib-only modules both sides share (the package face,
the protocol, the units, the sandbox policy and the process controls). It may import only the standard
library and itself: the worker runs model-written code, and everything it imports is within that code's
reach. The server side never imports the worker's internals: it talks to the worker through the protocol
alone. And the packages form no cycle, so each can be read from the bottom up.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlm_mcp"
SHARED = {
    "rlm_mcp",
    "rlm_mcp.bridge",
    "rlm_mcp.bridge.frames",
    "rlm_mcp.bridge.ops",
    "rlm_mcp.sandbox.policy",
    "rlm_mcp.sandbox.prctl",
    "rlm_mcp.units",
}
# Parsers of the optional `docs` extra: they read untrusted PDF and DOCX files, which is why they run in here.
WORKER_THIRD_PARTY = {"pypdf", "docx"}
# Never imported in the server: the map tasks run on a Ray cluster's workers (the model's function in a child
# that locks itself down with the worker's code, rlm_mcp.worker.mapchild), and the Ray driver, a process of
# its own, confines itself with the worker's Landlock code.
CLUSTER_SIDE = {"rlm_mcp.cluster.pieces", "rlm_mcp.cluster.driver"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, type_checking: bool) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports too); with `type_checking=False`, those
    under `if TYPE_CHECKING:` are left out (they never run)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if not type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped.update(id(child) for child in ast.walk(node) if child is not node)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def worker_side(name: str) -> bool:
    return name == "rlm_mcp.worker" or name.startswith("rlm_mcp.worker.") or name in SHARED


def test_the_worker_side_imports_only_the_standard_library_and_itself() -> None:
    offending = {}
    for name, path in MODULES.items():
        if not worker_side(name):
            continue
        outside = {
            imported
            for imported in imports(path, type_checking=True)
            if imported.split(".")[0] not in sys.stdlib_module_names
            and imported.split(".")[0] not in WORKER_THIRD_PARTY
            and imported != "__future__"
            and not (imported in MODULES and worker_side(imported))
            and not (imported.rpartition(".")[0] in MODULES and worker_side(imported.rpartition(".")[0]))
        }
        if outside:
            offending[name] = sorted(outside)
    assert offending == {}
    assert len([name for name in MODULES if worker_side(name)]) >= 20  # the worker's modules are found at all


def test_the_server_side_never_imports_the_workers_internals() -> None:
    offending = {
        name: sorted(
            imported for imported in imports(path, type_checking=True) if imported.startswith("rlm_mcp.worker")
        )
        for name, path in MODULES.items()
        if not worker_side(name) and name not in CLUSTER_SIDE
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_the_packages_form_no_cycle() -> None:
    """rlm_mcp.<package> -> rlm_mcp.<package> edges from imports that run; no strongly connected component
    holds more than one package."""

    def package(name: str) -> str:
        return ".".join(name.split(".")[:2])

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for imported in imports(path, type_checking=False):
            if imported.startswith("rlm_mcp.") and package(imported) != package(name):
                target = imported if imported in MODULES else imported.rpartition(".")[0]
                if target in MODULES:
                    edges[package(name)].add(package(target))
    assert cycles_among(edges) == []


def test_the_benchmarks_do_not_import_the_tests() -> None:
    """What both need (the fake provider, where the CLIs are) lives in testkit/."""
    bench = PACKAGE.parent / "bench"
    offending = {
        path.name: sorted(name for name in imports(path, type_checking=True) if name.split(".")[0] == "tests")
        for path in bench.glob("*.py")
    }
    assert {name: found for name, found in offending.items() if found} == {}


def module_edges(name: str, path: Path) -> set[str]:
    """The rlm_mcp modules `name` imports, type-only and lazy imports included: `from P import x` is an edge to
    P.x when that is a module, else to P; `import P.x` is an edge to P.x."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {target for target in targets if target in MODULES and target != name}


def cycles_among(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def test_the_modules_form_no_cycle() -> None:
    """Module -> module edges from every import, those under `if TYPE_CHECKING:` and those inside functions
    too: a type-only or lazy import still ties the two modules together, so that neither can be read,
    tested or moved without the other. No strongly connected component holds more than one module."""
    edges = {name: module_edges(name, path) for name, path in MODULES.items()}
    assert sum(len(targets) for targets in edges.values()) > 200  # the imports are found at all
    assert cycles_among(edges) == []
