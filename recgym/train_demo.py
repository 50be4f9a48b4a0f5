"""Moved to :mod:`recgym.demo` (``python -m recgym.demo``); this path keeps old imports and
``python -m recgym.train_demo`` working."""

if __name__ == "__main__":
    from recgym.demo import main

    raise SystemExit(main())

from recgym._moved import alias

alias(__name__, "recgym.demo")
