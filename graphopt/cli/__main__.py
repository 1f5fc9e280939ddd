"""`python -m graphopt.cli ...`: the same as `python -m graphopt` and the `graphopt` command."""

from graphopt.cli.main import entry

entry()
