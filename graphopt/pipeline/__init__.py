"""Passes and how they run: the Pass base class and its context, the pass manager, the registry."""
