"""The option tables of docs/training.md and docs/strategies.md are the generator's output, and list
every option arl-hf defines."""

import dataclasses
import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("generate_options", os.path.join(REPO, "docs", "generate_options.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_tables_are_up_to_date(gen):
    problems = gen.check()
    assert not problems, "\n".join(problems) + "\nrun: python docs/generate_options.py --write"


def test_every_option_defined_by_arl_hf_is_in_one_table(gen):
    from transformers import TrainingArguments

    ta = {f.name for f in dataclasses.fields(TrainingArguments)}
    declared = {f.name for d in gen.parser_dataclasses() for f in dataclasses.fields(d) if f.init and f.name not in ta}
    listed = [name for g in gen.groups() for name in g.names()]
    assert len(listed) == len(set(listed)), "an option is listed twice"
    assert declared <= set(listed), sorted(declared - set(listed))
    # and the pages hold them: one table row per option, in the page of its group
    texts = {page: open(os.path.join(REPO, "docs", page), encoding="utf-8").read()
             for page in {g.page for g in gen.groups()}}
    for g in gen.groups():
        rows = gen.blocks_in(texts[g.page])[g.key]
        for name in g.names():
            assert f"| `--{name}` |" in rows, f"{g.page}: {g.key} lacks --{name}"


def test_inherited_training_arguments_are_left_out_unless_overridden(gen):
    names = {name for g in gen.groups() for name in g.names()}
    assert "learning_rate" not in names and "output_dir" not in names
    assert "max_grad_norm" in names  # ARLConfig's default 0 differs from TrainingArguments' 1.0
    assert {"strategy", "arl_temperature", "ogm_alpha", "encoder", "dataset", "preset"} <= names


def test_grouping_by_prefix_and_by_dataclass(gen):
    from transformers import TrainingArguments

    keys = {g.key: g for g in gen.groups()}
    assert "arl_gamma" in keys["strategy:arl"].names()
    assert "ogm_alpha" in keys["strategy:ogm_ge"].names()
    assert "fixed_multipliers" in keys["strategy:fixed"].names()
    home = next(g for g in gen.groups() if "strategy" in g.names())  # --strategy is no strategy's option
    assert not home.key.startswith("strategy:") and home.page == "training.md"
    assert all(g.page == "strategies.md" for g in gen.groups() if g.key.startswith("strategy:"))

    # a strategy's options in a dataclass of their own (as composed into the parser) form its group,
    # unprefixed fields included; a TrainingArguments subclass is split by prefix
    @dataclasses.dataclass
    class OGMOptions:
        ogm_alpha: float = dataclasses.field(default=0.5, metadata={"help": "alpha"})
        warm: int = dataclasses.field(default=1, metadata={"help": "an unprefixed option"})

    @dataclasses.dataclass
    class Mixed(TrainingArguments):
        arl_gamma: float = 2.0
        strategy: str = "arl"

    got = {g.key: g.names() for g in gen.groups([Mixed, OGMOptions])}
    assert got == {"Mixed": ["strategy"], "strategy:arl": ["arl_gamma"], "strategy:ogm_ge": ["ogm_alpha", "warm"]}


def test_check_reports_a_stale_or_missing_table(gen, tmp_path, monkeypatch):
    for page in ("training.md", "strategies.md"):
        text = open(os.path.join(REPO, "docs", page), encoding="utf-8").read()
        if page == "strategies.md":  # a row goes missing, a table disappears
            text = text.replace("| `--agm_alpha` |", "| `--agm_beta` |")
            start = text.index("<!-- options:strategy:dr -->")
            text = text[:start] + text[text.index("<!-- /options -->", start) + len("<!-- /options -->"):]
        (tmp_path / page).write_text(text, encoding="utf-8")
    monkeypatch.setattr(gen, "DOCS", str(tmp_path))
    problems = gen.check()
    assert "docs/strategies.md: table options:strategy:agm differs from the code" in problems
    assert "docs/strategies.md: no table for options:strategy:dr" in problems
    assert not [p for p in problems if "training.md" in p]
    # --write repairs both: the stale table is regenerated, the missing one gets a section
    assert gen.write() == ["docs/strategies.md"]
    assert gen.check() == []
    assert "#### Options of `dr`" in (tmp_path / "strategies.md").read_text(encoding="utf-8")


def test_table_rows_show_type_default_and_choices(gen):
    keys = {g.key: g for g in gen.groups()}
    rows = gen.table(keys["strategy:arl"]).split("\n")
    variant = next(r for r in rows if r.startswith("| `--arl_variant` |"))
    assert '| str | `"paper"` |' in variant and "One of `paper`, `official`." in variant
    assert any(r.startswith("| `--arl_residual` | bool (`--no_arl_residual`) | `True` |") for r in rows)
    fixed = gen.table(keys["strategy:fixed"])
    assert "| `--fixed_multipliers` | list of float or None | `None` |" in fixed
