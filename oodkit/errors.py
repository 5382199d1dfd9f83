"""The one exception type for bad input; the CLI turns it into one line and exit code 2."""


class OodkitError(Exception):
    """A problem with the user's input or environment, stated in one readable line."""


def first_line(exc: BaseException, with_type: bool = False) -> str:
    """The first line of a third-party error's message (they often span many lines), or its
    type's name when it has none; ``with_type`` prefixes ``Type: ``."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    return f"{type(exc).__name__}: {first}" if with_type else first
