"""The one exception type for mistakes in the configuration or the input files."""


class UserError(Exception):
    """Bad configuration or input, found before (or instead of) long work.

    `main.py` prints it as one `error: ...` block and exits with status 2; any other exception is
    a bug in the tool and keeps its traceback. The message names the key, file, line or value and
    what was expected.
    """


class DirectoryInUse(UserError):
    """Another process holds the run directory: nothing of this job may be written into it."""
