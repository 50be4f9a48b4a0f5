"""Moved to :mod:`recgym.agents.teachers.scripted`; this path keeps old imports working."""

from recgym._moved import alias

alias(__name__, "recgym.agents.teachers.scripted")
