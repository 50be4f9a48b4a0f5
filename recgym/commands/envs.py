"""``recgym envs``: the registered environments, their data and scale."""

from __future__ import annotations

from rich.table import Table

from recgym.console import make_console


def run(args) -> int:
    import recgym  # noqa: F401  (registers everything)
    from recgym.data.registry import DATASETS
    from recgym.envs.registration import REGISTERED

    table = Table(title="Registered recgym environments")
    table.add_column("env id", no_wrap=True)
    table.add_column("dataset", no_wrap=True)
    table.add_column("scale")
    table.add_column("data it needs", ratio=1)
    for env_id, dataset in sorted(REGISTERED.items()):
        info = DATASETS.get(dataset)
        table.add_row(env_id, dataset, info.scale_label if info else "?", info.needs if info else "?")
    make_console().print(table)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("envs", help="list the registered environments and the data each needs")
    parser.set_defaults(func=run)
