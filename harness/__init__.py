"""spo-harness: experiment spec, pipeline, results store, built-in tasks and CLI."""

__version__ = "0.1.0"
