"""Teachers: scripted policies that read the prompt's text, and RecOne's cold-start traces.

- :mod:`~recgym.agents.teachers.scripted`: reference and teacher policies without a model;
- :mod:`~recgym.agents.teachers.cold_start`: traces from any teacher, kept, rationalized or dropped.
"""
