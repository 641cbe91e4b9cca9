"""The one exception type that the CLI turns into a one-line message.

Library code raises `DeltError` for every problem a user can fix (a missing
file, a bad flag, a column that does not exist). The CLI prints
``error: <message>`` on stderr and exits with status 1; a traceback appears
only with ``--debug``. Anything else that escapes is a bug and is reported
as an internal error.
"""


class DeltError(Exception):
    """A user-facing error: the message names the file, column or flag at fault."""

    exit_code = 1


class UsageError(DeltError):
    """A wrong combination of flags (exit status 2, like click's usage errors)."""

    exit_code = 2
