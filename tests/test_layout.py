"""The package's shape: layers import only downwards, no import cycle, public names and moved
paths keep working (docs/design.md is the map these tests hold to)."""

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first; a module belongs to the layer of its longest matching prefix.
LAYERS = [
    ("base", ["recgym._moved", "recgym.cache", "recgym.console"]),
    ("data", ["recgym.data"]),
    ("task", ["recgym.prompts", "recgym.rewards", "recgym.metrics", "recgym.baselines"]),
    ("envs", ["recgym.envs"]),
    ("agents", ["recgym.agents"]),
    ("front", ["recgym", "recgym.cli", "recgym.commands", "recgym.demo", "recgym.integrations",
               "recgym.evaluation", "recgym.train_demo", "recgym_verifiers"]),
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


def module_files() -> dict[str, Path]:
    files = {}
    for package in ("recgym", "recgym_verifiers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


MODULES = module_files()


def layer_of(module: str) -> str:
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and docs/design.md"
    return best


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(module: str) -> set[str]:
    """The project modules ``module`` imports anywhere in its body (functions included), but for
    ``if TYPE_CHECKING:`` blocks, which never run."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if RANK[layer_of(target)] > RANK[layer_of(module)]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_the_layer_walk_sees_what_it_must():
    """The walk finds a function-level import and resolves ``from package import submodule``."""
    assert "recgym.envs.vector" in GRAPH["recgym.agents.rollout.single_turn"]  # inside collect()
    assert "recgym.agents.checkpoints" in GRAPH["recgym.agents.trainer"]
    assert layer_of("recgym.agents.rollout.batch") == "agents" and layer_of("recgym") == "front"


def test_public_names_import_from_recgym_agents_without_torch():
    code = ("import sys; import recgym.agents as a; assert 'torch' not in sys.modules, 'torch imported'; "
            "from recgym.agents import GRPOTrainer, GRPOConfig, register_algorithm, make_policy, evaluate; "
            "from recgym.agents.trainer import GRPOTrainer as T; assert GRPOTrainer is T; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize(("old", "new"), [
    ("recgym.agents.logprobs", "recgym.agents.learner.logprobs"),
    ("recgym.agents.memory", "recgym.agents.learner.memory"),
    ("recgym.agents.episodes", "recgym.agents.rollout.episodes"),
    ("recgym.agents.prompt_sampler", "recgym.agents.rollout.prompt_sampler"),
    ("recgym.agents.scripted", "recgym.agents.teachers.scripted"),
    ("recgym.evaluation", "recgym.agents.evaluation"),
    ("recgym.train_demo", "recgym.demo"),
])
def test_a_moved_module_keeps_its_old_path_with_a_deprecation_warning(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_old_names_of_the_split_modules_still_import():
    from recgym.agents.learner import autocast, policy_weights  # was recgym/agents/learner.py
    from recgym.agents.rollout import (  # was recgym/agents/rollout.py
        collect,
        pack_batch,
        take_groups,
    )
    from recgym.agents.sft import ColdStartConfig, run_cold_start  # cold start moved to teachers/

    assert callable(autocast) and callable(policy_weights) and callable(collect)
    assert callable(pack_batch) and callable(take_groups) and callable(run_cold_start)
    assert ColdStartConfig.__module__ == "recgym.agents.teachers.cold_start"


def test_python_m_recgym_train_demo_still_runs():
    result = subprocess.run([sys.executable, "-m", "recgym.train_demo", "--help"], check=False,
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0 and "--grpo_steps" in result.stdout, result.stderr[-2000:]
