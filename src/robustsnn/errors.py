"""User-facing errors: one clear line on stderr, no traceback."""


class UserError(Exception):
    """An error the user can fix (bad input, missing file, wrong name).

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    The message says what is wrong, where, and how to fix it.
    """
