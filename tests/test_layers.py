"""The module structure: no module imports another that imports it back (directly or around a
circle), counting every import, also those inside functions and under TYPE_CHECKING."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The pintrain modules ``path`` imports (a name imported from a package counts as the
    submodule when there is one, else as the package)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    out.add(sub)
                elif target in modules:
                    out.add(target)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    paths = list((SRC / "pintrain").rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node)
    return found


def test_the_graph_sees_the_imports():
    g = graph()
    assert "pintrain.training.problem" in g["pintrain.torch.problem"]
    assert "pintrain.errors" in g["pintrain.mgrit.solver"]


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_solver_knows_nothing_of_training_and_training_nothing_of_mpi_or_torch():
    # the solver sees only errors and the array namespace; training neither torch nor MPI
    g = graph()
    for name, targets in g.items():
        if name.startswith("pintrain.mgrit"):
            allowed = ("pintrain.mgrit", "pintrain.errors", "pintrain.arrays")
            assert not {t for t in targets if not t.startswith(allowed)}, name
        if name.startswith("pintrain.training"):
            assert not {t for t in targets if t.startswith(("pintrain.torch", "pintrain.mgrit.comm"))}, name
