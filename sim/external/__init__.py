"""Outside benchmark adapters (placeholder; filled in by the sim work)."""


def register() -> None:
    """Register the benchmark adapter ids with Gymnasium."""
