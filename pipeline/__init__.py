"""The data half of clipengine: sources, fetching, extraction, matching and balancing, image
stages, manifests and the `pipeline` CLI."""

__version__ = "0.1.0"
