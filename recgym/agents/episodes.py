"""Moved to :mod:`recgym.agents.rollout.episodes`; this path keeps old imports working."""

from recgym._moved import alias

alias(__name__, "recgym.agents.rollout.episodes")
