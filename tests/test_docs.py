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


# --- the shell commands in README.md and docs/ parse with the real parsers --------------------------------------

SHELL_TAGS = {"bash", "sh", "shell", "console", "zsh"}
#: In an untagged (or ``text``) block only these lines are commands (and any ``$ `` line).
COMMAND_PREFIXES = ("recgym ", "python -m recgym.", "python examples/", ".venv/bin/recgym", "make ")
PLACEHOLDER = re.compile(r"(^|\s)\.\.\.(\s|$)|<[^>\s]*>")
#: Documented recgym commands with a placeholder the test cannot resolve: the command -> why it is not checked.
SKIPPED = {
    "accelerate launch --multi_gpu --num_processes 8 -m recgym.cli train grpo --config ...":
        "`--config ...` stands for any config; the torchrun lines beside it are checked",
}
#: Scripts that hand the flags their parser does not know to a config's ``--field value`` overrides.
FORWARDED_OVERRIDES = {"examples/train_recone.py": "GRPOConfig", "examples/custom_algorithm.py": "GRPOConfig"}
#: ``recgym`` sub-commands whose ``--field value`` options become a config through ``config_from_args``.
CONFIG_COMMANDS = {("train", "grpo"): "recgym.agents.config:GRPOConfig",
                   ("sft", "make-data"): "recgym.agents.teachers.cold_start:ColdStartConfig",
                   ("sft", "train"): "recgym.agents.sft:SFTTrainConfig",
                   ("reproduce", None): "recgym.reproduce:ReproduceConfig"}


def documented_commands(text: str, name: str) -> list[tuple[str, int, str]]:
    """``(name, line, command)`` for each shell command in ``text``'s fenced blocks: ``\\`` continuations
    joined, a ``$ `` prompt dropped (in a block with prompts only those lines count: the rest is
    output), comments (`` # ...``) left to :func:`shlex.split`."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"\s*```(\w*)", lines[i])
        i += 1
        if not fence:
            continue
        tag, start = fence.group(1).lower(), i
        while i < len(lines) and not re.match(r"\s*```\s*$", lines[i]):
            i += 1
        block, i = lines[start:i], i + 1
        if tag not in SHELL_TAGS | {"", "text"}:
            continue
        pending, first = "", 0
        prompted = any(raw.strip().startswith("$ ") for raw in block)  # a transcript: only `$ ` lines are typed
        for number, raw in enumerate(block, start + 1):
            line = raw.strip()
            if not pending:
                first = number
                if line.startswith("$ "):
                    line = line[2:]
                elif prompted or (tag not in SHELL_TAGS and not line.startswith(COMMAND_PREFIXES)):
                    continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            command = (pending + line).strip()
            pending = ""
            if command and not command.startswith("#"):
                found.append((name, first, command))
    return found


def _words(command: str) -> list[str]:
    """The argv, ``[--optional part]`` brackets dropped (the optional part is checked too), leading
    ``VAR=value`` assignments dropped."""
    import shlex

    words = shlex.split(re.sub(r"\[(--?[^\[\]]*)\]", r"\1", command), comments=True)
    while words and re.match(r"[A-Za-z_]\w*=", words[0]):
        words.pop(0)
    return words


def _class(spec: str):
    import importlib

    module, _, name = spec.rpartition(":")
    return getattr(importlib.import_module(module or "recgym.agents.config"), name)


class _Parsed(Exception):
    """Raised as the script's own parser returns, so that nothing after the parsing runs."""

    def __init__(self, namespace, extras):
        super().__init__()
        self.namespace, self.extras = namespace, list(extras)


def _parse_error(exc: SystemExit, stderr: str) -> str | None:
    """``None`` for ``--help`` (exit 0), else argparse's message."""
    if exc.code in (0, None):
        return None
    return stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {exc.code}"


def _check_recgym(parser, argv: list[str]) -> str | None:
    import contextlib
    import io

    from recgym.commands import CommandError
    from recgym.commands.train import config_from_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return _parse_error(exc, err.getvalue())
    sub = getattr(args, "trainer", None) or getattr(args, "sft_command", None)
    spec = CONFIG_COMMANDS.get((args.command, sub))
    if spec is None:
        return None
    if args.config and not (ROOT / args.config).is_file():
        return f"--config {args.config}: no such file in the repository"
    if args.config:
        args.config = str(ROOT / args.config)
    try:  # the overrides' names and values, as the command reads them (no model, no data)
        config_from_args(args, _class(spec))
    except (CommandError, ValueError, TypeError) as exc:
        return f"config: {exc}"
    return None


def _check_script(monkeypatch, target: str, argv: list[str]) -> str | None:
    """Run ``python examples/X.py`` (``path``) or ``python -m recgym.X`` (``module``) until its own
    parser returns: ``argparse.ArgumentParser.parse_args`` / ``parse_known_args`` (the outermost call;
    sub-parsers' nested calls pass) and ``recgym.demo.parse_settings`` raise :class:`_Parsed` then."""
    import argparse
    import contextlib
    import importlib
    import io
    import runpy
    import sys

    import recgym.demo

    is_module = not target.endswith(".py")
    if is_module:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError:
            return f"no module {target}"
        source, main = Path(module.__file__).read_text(), getattr(module, "main", None)
    else:
        if not (ROOT / target).is_file():
            return f"no file {target}"
        source, main = (ROOT / target).read_text(), None
    if target in FORWARDED_OVERRIDES and not re.search(r"parse_(known_)?args\(|parse_settings\(", source):
        try:  # the script reads its argv as config overrides itself
            _class(FORWARDED_OVERRIDES[target])().with_overrides(argv)
        except (ValueError, TypeError) as exc:
            return f"config: {exc}"
        return None
    if not re.search(r"parse_(known_)?args\(|parse_settings\(", source) or (is_module and main is None):
        missing = [w.split("=")[0] for w in argv if w.startswith("-") and w.split("=")[0] not in source]
        return f"flags not in {target}: {missing}" if missing else None

    state = {"depth": 0, "deferred": False}
    real = {name: getattr(argparse.ArgumentParser, name) for name in ("parse_args", "parse_known_args")}
    real_settings = recgym.demo.parse_settings

    def intercept(name):
        def wrapper(self, args=None, namespace=None):
            state["depth"] += 1
            try:
                result = real[name](self, args, namespace)
            finally:
                state["depth"] -= 1
            if state["depth"] == 0 and not state["deferred"]:
                raise _Parsed(*(result if name == "parse_known_args" else (result, [])))
            return result
        return wrapper

    def parse_settings(parser, argv=None):  # the demo's settings are checked after argparse, in here
        state["deferred"] = True
        try:
            result = real_settings(parser, argv)
        finally:
            state["deferred"] = False
        raise _Parsed(result, [])

    err = io.StringIO()
    with monkeypatch.context() as m:
        for name in real:
            m.setattr(argparse.ArgumentParser, name, intercept(name))
        m.setattr(recgym.demo, "parse_settings", parse_settings)
        m.setattr(sys, "argv", [target, *argv])
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                main(argv) if is_module else runpy.run_path(str(ROOT / target), run_name="__main__")
        except _Parsed as parsed:
            if not parsed.extras:
                return None
            if target not in FORWARDED_OVERRIDES:
                return f"unrecognized arguments: {' '.join(parsed.extras)}"
            try:
                _class(FORWARDED_OVERRIDES[target])().with_overrides(parsed.extras)
            except (ValueError, TypeError) as exc:
                return f"config: {exc}"
            return None
        except SystemExit as exc:
            return _parse_error(exc, err.getvalue())
    return f"{target} ran past its parser without parsing"  # pragma: no cover (a script that parses nothing)


PYTHON = re.compile(r"(\.venv/bin/)?python3?$")


def _in_scope(words: list[str]) -> bool:
    """recgym's own commands, its scripts, make targets, examples' shell scripts."""
    return (words[0] in ("recgym", ".venv/bin/recgym", "make") or "recgym.cli" in words
            or (bool(PYTHON.match(words[0])) and len(words) > 1
                and (words[1].startswith("examples/") or words[1:2] == ["-m"] and words[2].startswith("recgym.")))
            or (words[0] in ("bash", "sh") and len(words) > 1 and words[1].startswith("examples/")))


def _check_command(monkeypatch, parser, words: list[str], targets: set[str]) -> str | None:
    if words[0] in ("recgym", ".venv/bin/recgym"):
        return _check_recgym(parser, words[1:])
    if "-m" in words and words[words.index("-m") + 1:][:1] == ["recgym.cli"]:  # python/torchrun/accelerate
        return _check_recgym(parser, words[words.index("-m") + 2:])
    if PYTHON.match(words[0]) and words[1:2] == ["-m"] and words[2].startswith("recgym."):
        return _check_script(monkeypatch, words[2], words[3:])
    if PYTHON.match(words[0]) and len(words) > 1 and words[1].startswith("examples/"):
        return _check_script(monkeypatch, words[1], words[2:])
    if words[0] == "make":
        missing = [t for t in words[1:] if "=" not in t and not t.startswith("-") and t not in targets]
        return f"no Makefile target {missing}" if missing else None
    if words[0] in ("bash", "sh") and len(words) > 1 and words[1].startswith("examples/"):
        return None if (ROOT / words[1]).is_file() else f"no file {words[1]}"
    raise AssertionError(f"out of scope: {words}")  # pragma: no cover (see _in_scope)


def test_documented_commands_parse_with_the_real_parsers(monkeypatch):
    """Each shell command in a fenced block of README.md and docs/**/*.md (``bash``/``sh``/``console``
    blocks; in untagged/``text`` blocks the ``$ ``, ``recgym ``, ``python -m recgym.``,
    ``python examples/``, ``.venv/bin/recgym`` and ``make `` lines) is parsed as a user's shell would
    hand it over, and checked without running it:

    - ``recgym ...`` (also ``.venv/bin/recgym``, ``python -m recgym.cli``, ``torchrun``/``accelerate
      launch ... -m recgym.cli``): ``recgym.cli.build_parser().parse_args``; for ``train grpo``,
      ``sft make-data``, ``sft train`` and ``reproduce`` also ``config_from_args`` (the ``--config``
      file, which must exist, then the ``--field value`` overrides' names and values), as the CLI does;
    - ``python -m recgym.X`` / ``python examples/X.py``: the script's own parser, run until it returns
      (``recgym.demo.parse_settings`` included: the ``--config`` YAML and the settings' types);
      leftover flags of ``examples/train_recone.py`` (and ``custom_algorithm.py``'s argv) go through
      ``GRPOConfig.with_overrides``;
    - ``make X``: the Makefile has target X; ``bash examples/...sh``: the file exists.

    ``[--optional part]`` brackets are dropped (the part is checked too). Other programs (pip, ray,
    vLLM, verl) are not checked. Skipped, by the explicit :data:`SKIPPED` list (one command today,
    docs/training.md's ``accelerate launch ... --config ...``): recgym commands with a placeholder
    (`` ... `` or ``<...>``) the test cannot fill in; a new one fails until it is listed or written out.
    """
    from recgym.cli import build_parser

    parser = build_parser()
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.MULTILINE))
    failures, skipped, checked = [], [], 0
    for page in PAGES:
        for name, line, command in documented_commands(page.read_text(), str(page.relative_to(ROOT))):
            words = _words(command)
            if not words or not _in_scope(words):
                continue
            if PLACEHOLDER.search(" ".join(words)):
                skipped.append(" ".join(words))
                if skipped[-1] not in SKIPPED:
                    failures.append(f"{name}:{line}: placeholder in `{command}`: write it out or add it to SKIPPED")
                continue
            checked += 1
            result = _check_command(monkeypatch, parser, words, targets)
            if result is not None:
                failures.append(f"{name}:{line}: `{command}`: {result}")
    stale = sorted(set(SKIPPED) - set(skipped))
    assert not stale, f"SKIPPED lists commands no page has any more: {stale}"
    assert checked >= 20, f"only {checked} documented commands found: is the extraction broken?"
    assert not failures, "\n".join(failures)
