"""User-facing errors: one line naming the problem and the fix (never a traceback for a user mistake)."""


class SpectraError(ValueError):
    """A user mistake or an unusable input (bad model id, missing/corrupt file, unusable matrix)."""


class ModelLoadError(SpectraError):
    """The model could not be located or loaded; the message says why and what to do."""
