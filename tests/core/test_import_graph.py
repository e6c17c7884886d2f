"""The package's import graph is acyclic: every ``import`` / ``from ... import`` of every module of
``arl_hf`` (at module level, inside functions and under ``TYPE_CHECKING`` alike), relative imports
resolved, is an edge; a cycle fails the test and is printed."""

import ast
import os
from typing import Dict, List, Optional, Set

import arl_hf

ROOT = os.path.dirname(os.path.abspath(arl_hf.__file__))


def _modules() -> Dict[str, str]:
    """``{dotted module name: file}`` of every module of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(folder, f)
    return out


def _resolve(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> Dict[str, Set[str]]:
    """``{module: modules of the package it imports}``."""
    modules = _modules()
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.endswith("__init__.py")
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:  # `import arl_hf.x.y` of a name inside a module
                    t = t.rpartition(".")[0]
                if t and t != module:
                    graph[module].add(t)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of ``graph`` (a list of modules, first == last), or ``None``."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_builder_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "arl_hf.strategies.base" in graph["arl_hf.trainer"] or "arl_hf.strategies" in graph["arl_hf.trainer"]
    assert "arl_hf.metrics" in graph["arl_hf.trainer"]  # a function-level relative import
    assert "arl_hf.modeling.fusion" in graph["arl_hf.modeling.intermediate"]
    # and it does find a cycle where there is one
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_arl_hf_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_model_does_not_depend_on_the_training_strategies():
    graph = import_graph()
    modeling = [m for m in graph if m == "arl_hf.modeling" or m.startswith("arl_hf.modeling.")]
    assert "arl_hf.modeling.state" in graph["arl_hf.modeling.model"]  # the model's strategy-state slot
    for module in modeling:
        found = sorted(t for t in graph[module] if t == "arl_hf.strategies" or t.startswith("arl_hf.strategies."))
        assert not found, f"{module} imports {found}"


def test_the_config_does_not_import_the_trainer():
    graph = import_graph()

    def reach(start: str) -> Set[str]:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for t in graph.get(node, ()):
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return seen

    assert "arl_hf.trainer" not in reach("arl_hf.config")
    assert "arl_hf.trainer" not in graph["arl_hf.arguments"]
