"""README.md and docs/: every relative link points at a file (and heading) that exists, and the
README stays a user's guide in length."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 450
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen, in_code = set(), {}, False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^#{1,6} (.*)", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_slug_matches_githubs_rule():
    assert slug("Will it fit? `--estimate-memory`") == "will-it-fit---estimate-memory"
    assert slug("Shared prompts in the learner (`shared_prompt`)") == "shared-prompts-in-the-learner-shared_prompt"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_the_link_check_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nothing) [gone](missing.md) `[code](#not-a-link)`\n")
    assert links(page) == ["#title", "#nothing", "missing.md"]
    assert "nothing" not in anchors(page) and "title" in anchors(page)


def test_readme_is_at_most_its_length_budget():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move records to docs/ (budget {README_MAX_LINES})"


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head) and any(line.startswith("make test") for line in head)


def test_readme_quickstart_runs_and_prints_the_breakdown_its_comment_shows():
    """The first code block a user copies: it runs, and the reward it shows is the one it gets."""
    import ast

    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL).group(1)
    shown = ast.literal_eval(re.search(r'info\["reward_breakdown"\]\s+# (\{.*?), \.\.\.\}', block).group(1) + "}")
    scope: dict = {}
    exec(compile(block, "README quickstart", "exec"), scope)  # noqa: S102  (the README's own code, as a user runs it)
    assert {k: scope["info"]["reward_breakdown"][k] for k in shown} == pytest.approx(shown)
