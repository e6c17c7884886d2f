"""The package's import graph is acyclic and shallow: every ``import`` / ``from ... import`` of every
module of ``arl_hf`` (at module level, inside functions and under ``TYPE_CHECKING`` alike), relative
imports resolved, is an edge; a cycle fails the test and is printed, and so does a chain of more
than :data:`MAX_ROOMS` rooms (a top-level module, a subpackage, or one job of ``arl_hf.scripts``)."""

import ast
import functools
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


#: the longest import chain allowed, in rooms (the chain was 13 rooms deep before the script layer)
MAX_ROOMS = 10


def room(module: str) -> str:
    """The room of a module: ``arl_hf.<module>``, ``arl_hf.<subpackage>``, or ``arl_hf.scripts.<job>``
    (each job of the script layer is a room of its own: the protocol launches the train job)."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[1:2] == ["scripts"] else parts[:2])


def room_graph(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """``graph`` with every module replaced by its room (imports inside a room dropped)."""
    out: Dict[str, Set[str]] = {}
    for module, targets in graph.items():
        out.setdefault(room(module), set()).update(room(t) for t in targets if room(t) != room(module))
        for t in targets:
            out.setdefault(room(t), set())
    return out


def longest_chain(graph: Dict[str, Set[str]]) -> List[str]:
    """The longest import chain of an acyclic ``graph`` (first the importer, last a leaf)."""

    @functools.lru_cache(maxsize=None)
    def chain(node: str) -> tuple:
        return max([(node,) + chain(n) for n in sorted(graph[node])] or [(node,)], key=len)

    return list(max((chain(n) for n in sorted(graph)), key=len, default=()))


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


def test_longest_chain_and_rooms_on_a_known_graph():
    graph = {"a": {"b", "d"}, "b": {"c"}, "c": set(), "d": set()}
    assert longest_chain(graph) == ["a", "b", "c"]
    modules = {"arl_hf.cli": {"arl_hf.scripts.train"}, "arl_hf.scripts.train": {"arl_hf.data.record"},
               "arl_hf.data.record": set(), "arl_hf.data": {"arl_hf.data.record"}}
    assert room_graph(modules) == {"arl_hf.cli": {"arl_hf.scripts.train"},
                                   "arl_hf.scripts.train": {"arl_hf.data"}, "arl_hf.data": set()}


def test_imports_point_down_at_most_max_rooms_deep():
    rooms = room_graph(import_graph())
    assert find_cycle(rooms) is None, "cycle of rooms: " + " -> ".join(find_cycle(rooms))
    chain = longest_chain(rooms)
    assert len(chain) <= MAX_ROOMS, f"{len(chain)} rooms deep: " + " -> ".join(chain)


def test_cards_take_modalities_as_data_and_the_library_imports_no_script():
    graph = import_graph()
    assert not {t for t in graph["arl_hf.cards"] if t.startswith("arl_hf.modeling")}
    scripts = {m for m in graph if m.startswith("arl_hf.scripts")}
    importers = {m for m, targets in graph.items() if targets & scripts and m not in scripts}
    # the CLI, and the protocol, which launches the train job for each of its runs
    assert importers <= {"arl_hf.cli", "arl_hf.protocol.runs", "arl_hf.protocol.compare"}, importers
