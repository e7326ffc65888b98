"""Panda tabletop tasks (placeholder; filled in by the sim work)."""


def register() -> None:
    """Register the Panda task ids with Gymnasium."""
