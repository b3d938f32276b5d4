"""Generation backends, scorers, judges, metrics, statistics and reports."""
