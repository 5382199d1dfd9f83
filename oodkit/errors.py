"""The one exception type for bad input; the CLI turns it into one line and exit code 2."""


class OodkitError(Exception):
    """A problem with the user's input or environment, stated in one readable line."""
