"""Quality: eval suites, their assertion kinds, the runner, and cases and data from feedback."""
