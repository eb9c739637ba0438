"""Error messages for the command line: one line, never a traceback."""


def one_line(err):
    """The first line of err's message, white space folded (the type's name if it has none).

    An error raised in a DataLoader worker comes back wrapped ("Caught
    DataError in DataLoader worker process 0. Original Traceback ..."); its
    last line holds the original message, which is what is returned then.
    """
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0]
    if text.startswith("Caught ") and len(lines) > 1 and "Traceback" in lines[1]:
        text = lines[-1].split(": ", 1)[1] if ": " in lines[-1] else lines[-1]
    return " ".join(text.split())
