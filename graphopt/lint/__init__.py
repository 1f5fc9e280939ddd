"""Checkers that read a model and report findings: trt-check, qdq-lint, sparsity."""
