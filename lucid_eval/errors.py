"""The base of every error that is the user's to fix (input, files, environment), not a bug.

The CLI shows these as one line without a traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user asked for or gave us, or a missing piece of their environment."""
