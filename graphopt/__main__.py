"""`python -m graphopt ...`: the same as the `graphopt` command."""

from graphopt.cli.main import entry

entry()
