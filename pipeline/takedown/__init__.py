"""Takedown requests on a finished dataset: `pipeline remove` (pipeline.takedown.run)."""
