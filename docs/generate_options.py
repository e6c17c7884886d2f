"""Generate the option tables of the docs from the dataclasses of the command-line parser.

The tables sit between markers in the Markdown pages::

    <!-- options:KEY -->
    | option | type | default | meaning |
    ...
    <!-- /options -->

``KEY`` names a group of options: ``strategy:<name>`` for a strategy's options (``docs/strategies.md``),
otherwise the dataclass that defines them (``ARLConfig``, ``ModelArguments``, ... in ``docs/training.md``).
The dataclasses are those of the parser itself (``arl_hf.scripts.train.make_parser().dataclass_types``), so
a dataclass newly composed into the parser is picked up without touching this script. Only options
defined by arl-hf are listed: a field of ``transformers.TrainingArguments`` appears only where an
arl-hf class gives it another default.

Grouping: the fields of one dataclass that carry a strategy's prefix (``arl_``, ``ogm_``, ... as each
built-in strategy registers it: :func:`arl_hf.strategies.strategy_prefixes`) form that strategy's group; a
dataclass (not a ``TrainingArguments`` subclass) whose prefixed fields all carry one strategy's prefix
is that strategy's group as a whole; the other fields stay in their dataclass's group.

    python docs/generate_options.py --check    # exit status 1 and the differences if a table is stale
    python docs/generate_options.py --write    # rewrite the tables (and add a section for a new group)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import typing
from typing import Any, Dict, List, Optional, Sequence, Tuple

DOCS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(DOCS)

def _strategy_prefixes() -> Dict[str, str]:
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from arl_hf.strategies import strategy_prefixes

    return strategy_prefixes()


#: option-name prefix -> strategy name (``--strategy``), as each built-in strategy registers it
#: (``register_strategy(..., prefix=...)``)
STRATEGY_PREFIXES: Dict[str, str] = _strategy_prefixes()

TRAINING_PAGE = "training.md"
STRATEGIES_PAGE = "strategies.md"

BEGIN = re.compile(r"^<!-- options:(\S+) -->$")
END = "<!-- /options -->"


@dataclasses.dataclass
class Group:
    """One table: its marker key, the page it belongs on, a title and its fields."""

    key: str
    page: str
    title: str
    fields: List[Tuple[type, dataclasses.Field]] = dataclasses.field(default_factory=list)

    def names(self) -> List[str]:
        return [f.name for _, f in self.fields]


# ----------------------------------------------------------------------------------- fields
def parser_dataclasses() -> List[type]:
    """The dataclasses of the train parser defined by arl-hf, in the parser's order (options of
    strategies registered from outside the package, e.g. by ``--strategy_module``, are theirs
    to document)."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from arl_hf.scripts.train import make_parser as build_parser

    return [d for d in build_parser().dataclass_types if d.__module__.split(".")[0] == "arl_hf"]


def _training_arguments_fields() -> Dict[str, dataclasses.Field]:
    from transformers import TrainingArguments

    return {f.name: f for f in dataclasses.fields(TrainingArguments)}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def own_fields(dtype: type) -> List[dataclasses.Field]:
    """The fields arl-hf defines in ``dtype``: not ``TrainingArguments``' own, unless given another
    default."""
    from transformers import TrainingArguments

    base = _training_arguments_fields() if issubclass(dtype, TrainingArguments) else {}
    out = []
    for f in dataclasses.fields(dtype):
        if not f.init:
            continue
        if f.name in base and _default(f) == _default(base[f.name]):
            continue
        out.append(f)
    return out


def strategy_of(name: str) -> Optional[str]:
    """The strategy whose prefix ``name`` carries (longest prefix first), or None."""
    for prefix in sorted(STRATEGY_PREFIXES, key=len, reverse=True):
        if name.startswith(prefix):
            return STRATEGY_PREFIXES[prefix]
    return None


def _page_of_class(dtype: type) -> str:
    return STRATEGIES_PAGE if dtype.__module__.startswith("arl_hf.strategies") else TRAINING_PAGE


def _title_of_class(dtype: type) -> str:
    doc = (dtype.__doc__ or "").strip().split("\n\n")[0]
    doc = " ".join(doc.split())
    if doc.startswith(dtype.__name__ + "("):  # dataclass's generated signature
        doc = ""
    return f"`{dtype.__name__}`" + (f": {doc}" if doc else "")


def groups(dataclass_types: Optional[Sequence[type]] = None) -> List[Group]:
    """The option groups of the parser's dataclasses, in a stable order: the dataclass groups in the
    parser's order, then the strategy groups in the order of :data:`STRATEGY_PREFIXES`."""
    from transformers import TrainingArguments

    if dataclass_types is None:
        dataclass_types = parser_dataclasses()
    by_class: Dict[str, Group] = {}
    by_strategy: Dict[str, Group] = {}

    def strategy_group(name: str) -> Group:
        if name not in by_strategy:
            by_strategy[name] = Group(f"strategy:{name}", STRATEGIES_PAGE, f"`{name}`")
        return by_strategy[name]

    for dtype in dataclass_types:
        fields = own_fields(dtype)
        prefixed = {strategy_of(f.name) for f in fields} - {None}
        whole = None
        if len(prefixed) == 1 and not issubclass(dtype, TrainingArguments):
            whole = prefixed.pop()
        for f in fields:
            name = whole or strategy_of(f.name)
            if name is not None:
                strategy_group(name).fields.append((dtype, f))
            else:
                if dtype.__name__ not in by_class:
                    by_class[dtype.__name__] = Group(dtype.__name__, _page_of_class(dtype), _title_of_class(dtype))
                by_class[dtype.__name__].fields.append((dtype, f))
    order = {s: i for i, s in enumerate(STRATEGY_PREFIXES.values())}
    strategies = sorted(by_strategy.values(), key=lambda g: order.get(g.key.split(":", 1)[1], len(order)))
    return list(by_class.values()) + strategies


# ---------------------------------------------------------------------------------- tables
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(_type_name(a) for a in inner)
        return text + " or None" if len(inner) < len(args) else text
    if origin in (list, List):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, Dict):
        return "dict"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _type_of(dtype: type, f: dataclasses.Field) -> str:
    try:
        hints = typing.get_type_hints(dtype)
    except Exception:  # an annotation that does not resolve: fall back to what the field says
        hints = {}
    return _type_name(hints.get(f.name, f.type))


def _value(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table(group: Group) -> str:
    """The Markdown table of one group (no markers)."""
    lines = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for dtype, f in group.fields:
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            help_text += " One of " + ", ".join(f"`{c}`" for c in choices) + "."
        kind = _type_of(dtype, f)
        if kind == "bool" and _default(f) is True:
            kind += f" (`--no_{f.name}`)"
        lines.append(f"| `--{f.name}` | {_cell(kind)} | {_value(_default(f))} | {_cell(help_text)} |")
    return "\n".join(lines)


def block(group: Group) -> str:
    return f"<!-- options:{group.key} -->\n{table(group)}\n{END}"


# ------------------------------------------------------------------------------- the pages
def _page_path(page: str) -> str:
    return os.path.join(DOCS, page)


def blocks_in(text: str) -> Dict[str, str]:
    """``key -> table`` of every marked block of a page's text."""
    found: Dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        if m:
            j = i + 1
            while j < len(lines) and lines[j] != END:
                j += 1
            if j == len(lines):
                raise ValueError(f"options:{m.group(1)}: no closing {END}")
            found[m.group(1)] = "\n".join(lines[i + 1:j])
            i = j
        i += 1
    return found


def render(text: str, page_groups: Sequence[Group]) -> str:
    """``text`` with every marked block replaced by its group's table, blocks of groups that no
    longer exist removed, and a section appended for each group that has no block yet."""
    wanted = {g.key: g for g in page_groups}
    out: List[str] = []
    lines = text.split("\n")
    seen = set()
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j] != END:
            j += 1
        key = m.group(1)
        if key in wanted:
            out.append(block(wanted[key]))
            seen.add(key)
        i = j + 1
    missing = [g for g in page_groups if g.key not in seen]
    result = "\n".join(out)
    if missing:
        result = result.rstrip("\n") + "\n"
        for g in missing:
            result += f"\n#### Options of {g.title.split(':')[0]}\n\n{block(g)}\n"
    return result


def expected_pages(all_groups: Optional[Sequence[Group]] = None) -> Dict[str, str]:
    """``page -> text`` as :func:`render` would write it, for the pages that hold tables."""
    all_groups = list(groups() if all_groups is None else all_groups)
    pages: Dict[str, List[Group]] = {TRAINING_PAGE: [], STRATEGIES_PAGE: []}
    for g in all_groups:
        pages.setdefault(g.page, []).append(g)
    out = {}
    for page, page_groups in pages.items():
        with open(_page_path(page), encoding="utf-8") as fh:
            out[page] = render(fh.read(), page_groups)
    return out


def check(all_groups: Optional[Sequence[Group]] = None) -> List[str]:
    """What differs between the pages and the generated tables (empty: up to date)."""
    all_groups = list(groups() if all_groups is None else all_groups)
    problems = []
    for page, text in expected_pages(all_groups).items():
        with open(_page_path(page), encoding="utf-8") as fh:
            current = fh.read()
        if current == text:
            continue
        have, want = blocks_in(current), blocks_in(text)
        for key in want:
            if key not in have:
                problems.append(f"docs/{page}: no table for options:{key}")
            elif have[key] != want[key]:
                problems.append(f"docs/{page}: table options:{key} differs from the code")
        for key in have:
            if key not in want:
                problems.append(f"docs/{page}: table options:{key} names no option group of the parser")
        if not problems:
            problems.append(f"docs/{page}: differs from the generated text")
    return problems


def write(all_groups: Optional[Sequence[Group]] = None) -> List[str]:
    """Rewrite the tables; returns the pages changed."""
    changed = []
    for page, text in expected_pages(all_groups).items():
        path = _page_path(page)
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                continue
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        changed.append(f"docs/{page}")
    return changed


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit with status 1 if a table is stale")
    mode.add_argument("--write", action="store_true", help="rewrite the tables")
    args = parser.parse_args(argv)
    if args.write:
        changed = write()
        print("\n".join(changed) if changed else "up to date")
        return 0
    problems = check()
    if problems:
        print("\n".join(problems) + "\nrun: python docs/generate_options.py --write", file=sys.stderr)
        return 1
    print("up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
