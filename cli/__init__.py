"""The `magvit` command line: the one place that knows models/, training/ and service/."""
