"""``recgym algorithms``: the registered RL algorithms."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("algorithms", help="list the registered RL algorithms")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from recgym.agents.algorithms import list_algorithms
    from recgym.console import make_console

    table = Table(title="registered algorithms (use as `algorithm:` in a training config)")
    table.add_column("name")
    table.add_column("what it does")
    for name, doc in list_algorithms().items():
        table.add_row(name, doc)
    make_console().print(table)
    return 0
