"""The one exception type for bad input; the CLI turns it into one line and exit code 2."""


class OodkitError(Exception):
    """A problem with the user's input or environment, stated in one readable line."""


class Interrupted(Exception):
    """A run stopped by a signal after its current batch; finished work is kept and a rerun
    resumes. The CLI prints the message as one line and exits with 128 + the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def first_line(exc: BaseException, with_type: bool = False) -> str:
    """The first line of a third-party error's message (they often span many lines), or its
    type's name when it has none; ``with_type`` prefixes ``Type: ``."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    return f"{type(exc).__name__}: {first}" if with_type else first


def brief(value: object, limit: int = 80) -> str:
    """A repr shortened at every level (``reprlib``, which also stops at self-references),
    cut to ``limit`` characters: what an error line may quote of user data (a config value
    can be a huge expanded structure)."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlevel = 60, 60, 3
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
