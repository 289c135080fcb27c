"""The one exception type every stage raises for a user-facing failure (a leaf: imports nothing)."""


class StageError(Exception):
    """A user-facing failure: printed as one clear line, exit status 1, no traceback."""
