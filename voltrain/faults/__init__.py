"""What voltrain does when things go wrong: locks against a second run on the same
directory, one-line reports of OS errors, a checkpoint on SIGTERM, and unreadable data."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (its type's name if it has none)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
