"""The README and docs: links resolve, and project text speaks of the project only."""

import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path):
    """GitHub-style heading anchors of a Markdown file."""
    out = set()
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^#+ (.+)$", line.rstrip())
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def test_internal_links_resolve():
    bad = []
    for page in PAGES:
        text = open(page, encoding="utf-8").read()
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, frag = target.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(full):
                bad.append(f"{os.path.relpath(page, REPO)}: {target} (no such file)")
            elif frag and full.endswith(".md") and frag not in anchors(full):
                bad.append(f"{os.path.relpath(page, REPO)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


#: words about how the project was made (people, sessions, the process), never about the project
PROCESS_WORDS = re.compile(
    r"developer|\bsessions?\b|other developers|while others|\bhelper\b(?! function| module| class| method)"
    r"|shared with other|\btoday\b|we measured|\bengineers?\b|\bthe lead\b|\bworktree\b|\bthis task\b"
    r"|environment this package is developed|development machine|shared/reference",
    re.I,
)
#: paths outside the repository (the machine the project is built on)
OUTSIDE_PATHS = re.compile(r"\.\./shared|(?<![\w.~-])/work/|(?<![\w.~-])/tmp/")


def project_files():
    """README, docs pages and scripts, the package's sources (docstrings), examples, model cards and
    templates."""
    files = PAGES + glob.glob(os.path.join(REPO, "docs", "*.py"))
    files += glob.glob(os.path.join(REPO, "arl_hf", "**", "*.py"), recursive=True)
    files += glob.glob(os.path.join(REPO, "examples", "*.py"))
    files += glob.glob(os.path.join(REPO, "model_cards", "*.md"))
    files += [f for f in glob.glob(os.path.join(REPO, "arl_hf", "templates", "**", "*"), recursive=True)
              if os.path.isfile(f)]
    return sorted(set(files))


def prose_lines(path):
    """``(line number, line)`` of a file; for Markdown, lines inside fenced code blocks are left out."""
    fenced = False
    for i, line in enumerate(open(path, encoding="utf-8")):
        if path.endswith(".md") and line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield i + 1, line


def test_project_text_speaks_of_the_project_only():
    hits = [f"{os.path.relpath(f, REPO)}:{i}: {line.strip()}"
            for f in project_files() for i, line in enumerate(open(f, encoding="utf-8"), 1)
            if PROCESS_WORDS.search(line)]
    assert not hits, "\n".join(hits)


def test_project_text_names_no_path_outside_the_repository():
    hits = [f"{os.path.relpath(f, REPO)}:{i}: {line.strip()}"
            for f in project_files() for i, line in prose_lines(f) if OUTSIDE_PATHS.search(line)]
    assert not hits, "\n".join(hits)


def test_the_checks_catch_what_they_are_for():
    for text in ("as measured in this session", "the other developers' code", "shared with other jobs",
                 "a helper wrote it", "the figures we measured today"):
        assert PROCESS_WORDS.search(text), text
    for text in ("the helpers the built-in methods use", "a helper function", "the session-free API"):
        assert not PROCESS_WORDS.search(text.replace("session-free", "stateless")), text
    for text in ("see ../shared/ref.md", "written to /work/x", "cached in /tmp/cache"):
        assert OUTSIDE_PATHS.search(text), text
    assert not OUTSIDE_PATHS.search("outputs/work/run and data/tmp/x")
    assert [n for n, _ in prose_lines(os.path.join(REPO, "README.md"))]  # the README has prose lines


def test_readme_is_short():
    size = os.path.getsize(os.path.join(REPO, "README.md"))
    assert size <= 15_000, f"README.md is {size} bytes; move detail into docs/"


def test_readme_links_every_page():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    linked = {os.path.normpath(t.partition("#")[0]) for t in LINK.findall(readme)}
    pages = {os.path.relpath(p, REPO) for p in PAGES[1:]}
    assert pages <= linked, sorted(pages - linked)


# ------------------------------------------------------------------------------- docs/paper.md
def _paper_names():
    """The backticked names of the right-hand column of docs/paper.md's tables."""
    names = []
    for line in open(os.path.join(REPO, "docs", "paper.md"), encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) == 3 and not set(cells[2]) <= set("-") and cells[2] != "implemented by":
            names += re.findall(r"`([^`]+)`", re.sub(r"\[[^\]]*\]\([^)]*\)", "", cells[2]))
    return names


def _resolves(name, known):
    """Whether a name of docs/paper.md is something the package has."""
    if name.startswith("arl-hf "):
        return name.split()[1] in known["commands"]
    if "/" in name and not name.startswith("timm:"):
        if os.path.exists(os.path.join(REPO, name)):
            return True
        # a file a run writes: named by the package's code
        return any(os.path.basename(name) in open(f, encoding="utf-8").read()
                   for f in glob.glob(os.path.join(REPO, "arl_hf", "**", "*.py"), recursive=True))
    if name.startswith("timm:"):
        import timm

        return bool(timm.list_models(name[len("timm:"):], pretrained=True))
    key, eq, value = name.partition("=")
    if eq:
        if key in known["values"]:
            return value in known["values"][key]
        return key in known["options"] or key in known["forward"]
    if "." in name:
        import arl_hf

        obj = arl_hf
        for part in name.split("."):
            if not hasattr(obj, part) and part not in getattr(obj, "__dataclass_fields__", {}) \
                    and part not in getattr(obj, "__init__").__code__.co_varnames:
                return False
            obj = getattr(obj, part, None)
        return True
    return any(name in known[k] for k in ("options", "presets", "strategies", "fusions", "encoders"))


def test_paper_page_names_what_the_package_has():
    import inspect

    from arl_hf import MultimodalModel
    from arl_hf.data import AUDIO_PRESETS
    from arl_hf.modeling import ENCODERS, FUSIONS
    from arl_hf.presets import PRESETS
    from arl_hf.scripts.train import make_parser as build_parser
    from arl_hf.strategies import STRATEGIES

    parser = build_parser()
    options = {a.dest for a in parser._actions}
    known = {
        "options": options, "presets": set(PRESETS), "strategies": set(STRATEGIES), "fusions": set(FUSIONS),
        "encoders": set(ENCODERS), "commands": {"train", "evaluate", "compare", "plot", "env"},
        "forward": set(inspect.signature(MultimodalModel.forward).parameters),
        "values": {"fusion": set(FUSIONS), "strategy": set(STRATEGIES), "arl_variant": {"paper", "official"},
                   "init": {"timm", "authors"}, "preprocessing": set(AUDIO_PRESETS)},
    }
    names = _paper_names()
    assert len(names) > 40 and "arl_gamma" in names and "cremad" in names
    bad = [n for n in names if not _resolves(n, known)]
    assert not bad, bad
    # and the check rejects what the package does not have
    assert not [n for n in ("arl_beta", "fusion=late", "preset_x", "arl_hf/nothing.py", "strategy=magic")
                if _resolves(n, known)]
    # the presets of the paper's datasets and the ablations are all there
    for name in ("ave", "kinetics_sounds", "mosi", "ucf101", "arl_unimodal_loss", "arl_asymmetric",
                 "arl_residual", "fixed", "arl_variant=paper", "arl_variant=official"):
        assert name in names, name


def test_strategy_option_names_in_the_docs_are_options():
    """A name like `ogm_alpha` or `arl_gamma` in any page is an option of the parser (or one of the few
    other names that carry a strategy's prefix)."""
    from arl_hf.scripts.compare import make_parser as compare_parser
    from arl_hf.scripts.train import make_parser as build_parser
    from arl_hf.strategies import STRATEGIES

    own, _ = compare_parser().parse_known_args([])  # arl-hf compare's own options (the rest are train's)
    options = {a.dest for a in build_parser()._actions} | set(vars(own))
    others = {
        "arl_hf",  # the package
        "arl_hf_preprocessing", "arl_hf_build",  # keys of a prepared dataset's card
        "arl_hf_multimodal", "arl_multimodal",  # the model type of the checkpoints, and its legacy name
        "arl_gradient_modulation",  # the model attribute that selects parameter-mode modulation
        "dr_times",  # a logged metric
    }
    token = re.compile(r"`(?:--)?((?:arl|ogm|agm|pmr|gblending|mmpareto|mla|dr|fixed)_[a-z0-9_]+)`")
    bad = [f"{os.path.relpath(p, REPO)}: {name}"
           for p in PAGES for name in token.findall(open(p, encoding="utf-8").read())
           if name not in options | set(STRATEGIES) | others]
    assert not bad, bad
    assert token.findall("`--ogm_alpha` and `arl_gama`") == ["ogm_alpha", "arl_gama"]
