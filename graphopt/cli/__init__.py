"""graphopt's command line: one module per subcommand (see docs/ARCHITECTURE.md)."""

from graphopt.cli.main import entry, main

__all__ = ["entry", "main"]
