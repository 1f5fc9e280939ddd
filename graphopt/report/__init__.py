"""Reports about models and runs: inspect (params, FLOPs, memory) and Markdown run reports."""
