"""Moved to :mod:`recgym.agents.evaluation`; this path keeps old imports working."""

from recgym._moved import alias

alias(__name__, "recgym.agents.evaluation")
