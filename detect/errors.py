"""The one exception type users see: a message naming the file and the bad value."""


class DetectError(Exception):
    """A user-facing error (bad input file, bad config value, missing weights).

    The CLI prints its message and exits with status 2 instead of showing a traceback.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying one line on what was kept and how to continue; the CLI prints it after
    ``interrupted:`` and exits with status 130."""
