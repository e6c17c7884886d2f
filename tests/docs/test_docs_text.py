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


def test_project_text_speaks_of_the_project_only():
    pattern = re.compile(r"developer|this session|the session that|shared/reference|\.\./shared|other developers", re.I)
    files = PAGES + glob.glob(os.path.join(REPO, "arl_hf", "**", "*.py"), recursive=True) \
        + glob.glob(os.path.join(REPO, "examples", "*.py")) + glob.glob(os.path.join(REPO, "model_cards", "*.md"))
    hits = [f"{os.path.relpath(f, REPO)}:{i + 1}: {line.strip()}"
            for f in files for i, line in enumerate(open(f, encoding="utf-8")) if pattern.search(line)]
    assert not hits, "\n".join(hits)
