"""The house's rules, read from the source: no import cycle among the modules of sweep/, analysis/ and
the Hydra plugin (every import counts: at the top, inside a function, or for type checking only), and
no module importing another's private names."""
import ast
from pathlib import Path

from helpers.configs import ROOT

PACKAGES = ("sweep", "analysis", "hydra_plugins")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, str]]:
    """(module, name) of every `import` and `from ... import` in the file, the module resolved to one of ours
    where it names one (a name imported from a package may be a module of it)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module,
                       alias.name) for alias in node.names]
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        targets = set()
        for module, _ in imports(path, known):
            while module and module not in known:
                module = module.rpartition(".")[0]
            if module and module != name and not name.startswith(f"{module}."):  # a package's own __init__
                targets.add(module)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_module_graph_has_no_cycle():
    edges = graph()
    assert len(edges) > 80 and "sweep.run.selection" in edges["sweep.run.job"]  # the graph is read
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_s_private_name():
    known = modules()
    private = [(name, module, imported) for name, path in known.items() for module, imported in imports(path, known)
               if module.split(".")[0] in PACKAGES and imported.startswith("_") and not imported.startswith("__")]
    assert private == []


def test_the_schema_and_the_analysis_hold_no_machine_path_and_know_no_demo():
    for path in [ROOT / "sweep" / "config.py", *(ROOT / "analysis").rglob("*.py")]:
        text = path.read_text()
        assert "/home/" not in text and "sweep.data.universe" not in text and "sweep.data.demo" not in text, path
