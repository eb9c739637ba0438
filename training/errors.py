"""Errors the command lines report as one line (no traceback), and how to shorten one."""


class ConfigError(ValueError):
    """A bad combination of options; the message says which."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def one_line(err):
    """The message of err on one line.

    An error raised in a DataLoader worker comes back wrapped ("Caught
    DataError in DataLoader worker process 0. Original Traceback ..."); its
    last line holds the original message.
    """
    text = str(err).strip()
    if text.startswith("Caught ") and "Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split()) or type(err).__name__
