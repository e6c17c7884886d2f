"""Every ```python block of README.md and docs/*.md runs.

Each page's blocks run in order, in one fresh interpreter per page (one namespace, as cells of a
notebook), in a temporary working directory, offline (``HF_HUB_OFFLINE=1``) and on one thread. A
block that cannot run on a CPU-only machine without network access is marked in its info string,
```` ```python no-run ````, and its first line is a comment saying why.

The pages share one datasets cache for the test session, so the embedded data is built once.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
FENCE = re.compile(r"^(\s*)```(.*)$")
TIMEOUT_S = 600

#: what each page's interpreter runs: the blocks, in order, in one namespace
DRIVER = textwrap.dedent(
    """
    import json, sys, traceback
    blocks = json.load(open(sys.argv[1], encoding="utf-8"))
    namespace = {"__name__": "__main__"}
    for block in blocks:
        print(f"--- {block['where']}", flush=True)
        try:
            exec(compile(block["source"], block["where"], "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print(f"FAILED: {block['where']}", file=sys.stderr, flush=True)
            sys.exit(1)
    """
)


def code_blocks(path):
    """``(line, info string, source)`` of every fenced block of a Markdown file."""
    out, lines = [], open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group(2).strip():
            indent, info, start = m.group(1), m.group(2).strip(), i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            body = [line[len(indent):] if line.startswith(indent) else line for line in lines[start:j]]
            out.append((start, info, "\n".join(body) + "\n"))
            i = j
        elif m:  # an unlabelled block: skip to its end
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            i = j
        i += 1
    return out


def python_blocks(path):
    """``(line, runnable, source)`` of the ```python blocks of a page."""
    out = []
    for line, info, source in code_blocks(path):
        words = info.split()
        if words[0] != "python":
            continue
        unknown = set(words[1:]) - {"no-run"}
        assert not unknown, f"{os.path.relpath(path, REPO)}:{line}: unknown info string {info!r}"
        out.append((line, "no-run" not in words, source))
    return out


RUNNABLE = [p for p in PAGES if any(run for _, run, _ in python_blocks(p))]


def test_pages_with_python_blocks_are_found():
    names = {os.path.relpath(p, REPO) for p in RUNNABLE}
    assert {"README.md", "docs/quickstart.md", "docs/training.md", "docs/strategies.md"} <= names


def test_no_run_blocks_say_why_and_compile():
    bad = [f"{os.path.relpath(p, REPO)}:{line}" for p in PAGES for line, run, source in python_blocks(p)
           if not run and not source.lstrip().startswith("#")]
    assert not bad, "a no-run block must start with a comment saying why it cannot run: " + ", ".join(bad)
    for page in PAGES:  # what is not run is at least valid Python
        for line, run, source in python_blocks(page):
            if not run:
                compile(source, f"{os.path.relpath(page, REPO)}, block at line {line}", "exec")


def test_block_extraction():
    import tempfile

    text = ("# t\n```python\nx = 1\n```\n\n- item\n\n  ```python no-run\n  # needs a GPU\n  y = 2\n  ```\n"
            "```\nnot python\n```\n```bash\necho\n```\n")
    with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as fh:
        fh.write(text)
    try:
        assert python_blocks(fh.name) == [(2, True, "x = 1\n"), (8, False, "# needs a GPU\ny = 2\n")]
    finally:
        os.unlink(fh.name)


@pytest.fixture(scope="session")
def datasets_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("docs-datasets-cache"))


def run_page(page, tmp_path, datasets_cache):
    """Run a page's runnable blocks in order in a fresh interpreter; returns the finished process."""
    rel = os.path.relpath(page, REPO)
    blocks = [{"where": f"{rel}, block at line {line}", "source": source}
              for line, run, source in python_blocks(page) if run]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    (tmp_path / "driver.py").write_text(DRIVER, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_CACHE": datasets_cache,
        "MPLBACKEND": "Agg",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p]),
    })
    return subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.mark.parametrize("page", RUNNABLE, ids=[os.path.relpath(p, REPO) for p in RUNNABLE])
def test_python_blocks_run(page, tmp_path, datasets_cache):
    proc = run_page(page, tmp_path, datasets_cache)
    if proc.returncode != 0:
        failed = re.findall(r"^FAILED: (.*)$", proc.stderr, flags=re.M)
        pytest.fail(f"{failed[0] if failed else os.path.relpath(page, REPO)} failed (exit {proc.returncode}):\n"
                    f"{proc.stderr[-6000:]}\n--- stdout ---\n{proc.stdout[-2000:]}")


def test_a_failing_block_is_reported_with_its_page_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nimport os\nx = 1\n```\n\ntext\n\n```python\nassert x == 2, 'x is 1'\n```\n"
                    "```python\nprint('never reached')\n```\n", encoding="utf-8")
    proc = run_page(str(page), tmp_path, str(tmp_path / "cache"))
    assert proc.returncode == 1
    assert re.search(r"^FAILED: .*page\.md, block at line 8$", proc.stderr, flags=re.M), proc.stderr
    assert "AssertionError: x is 1" in proc.stderr and "never reached" not in proc.stdout
