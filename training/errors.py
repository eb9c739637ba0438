"""Errors the command lines report as one line (no traceback); csra.errors.one_line shortens them."""


class ConfigError(ValueError):
    """A bad combination of options; the message says which."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""
