"""The one exception type users see: a message that names the problem and the fix."""


class MpqbenchError(Exception):
    """A user-facing error. The CLI prints its message without a traceback."""
