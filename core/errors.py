"""The one exception type that carries a user-facing message.

Anything raised as `TumorsweepError` is bad input the user can fix (a file, field or value);
the CLI prints its message on one line and exits non-zero instead of a traceback.
"""


class TumorsweepError(Exception):
    """Bad input: the message names the file, field or value and what is wrong."""
