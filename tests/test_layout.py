"""The package's layout: no import cycle in ``bovw/``, and no long module without a reason.

The package is layered, each module above the ones it uses.

The intended house, from the top::

    cli -> assembly, pipeline, estimator, run_folder, compare, persistence
        -> stages (vocabulary, encoding, svm, features, images)
        -> data, cache, config, errors

Every module of ``bovw/`` is parsed with :mod:`ast` (nothing is imported), and
every import of a ``bovw`` module is an edge, at module level or inside a
function alike: a function-level import that only dodges a cycle at import
time is still a cycle in the design. ``from package import name`` is an edge to
``package.name`` when that is a module (Python then loads the submodule, not
more of the package), else to ``package`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bovw

PACKAGE = Path(bovw.__file__).resolve().parent


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` is the package)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its source."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(name, is_package, node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in modules:
                        edges.add(sub)
                    elif source in modules:
                        edges.add(source)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module.

    Tarjan's algorithm finds the components; a breadth-first search inside each
    gives the shortest cycle through its first module, so a failure names a
    path a reader can follow.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        parent: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        found = v
                        break
                    if w not in parent:
                        parent[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [found]  # back from the module that imports ``start`` (self-imports are dropped)
        while path[-1] != start:
            path.append(parent[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("import pkg.a\nfrom .. import a\n")
    graph = import_graph(module_files(pkg))
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.a"},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]


def test_bovw_has_no_import_cycle():
    cycles = find_cycles(import_graph(module_files()))
    assert not cycles, "Import cycles in bovw/:\n" + "\n".join(" -> ".join(c) for c in cycles)


#: Lines above which a module must say, in its docstring, why it is one module.
MAX_LINES = 500


def test_long_modules_give_their_reason():
    unexplained = []
    for name, path in module_files().items():
        source = path.read_text(encoding="utf-8")
        if source.count("\n") <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(source)) or ""
        if not any(line.startswith("Length: ") for line in docstring.splitlines()):
            unexplained.append(f"{name} ({source.count(chr(10))} lines)")
    assert not unexplained, (
        f"Modules over {MAX_LINES} lines without a 'Length: <reason>' line in their docstring "
        "(split them along their seams, or say why they are one module): " + ", ".join(unexplained)
    )
