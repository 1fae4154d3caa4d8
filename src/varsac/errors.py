"""Errors that come from what the user asked for, reported as a message rather than a traceback."""


class ConfigError(ValueError):
    """A config value or an input that cannot work; the message names it and says what to do."""


class JobFailed(RuntimeError):
    """A job of a multirun stopped with a message; Hydra records it as failed and goes on."""


def in_one_line(error: BaseException) -> str:
    """The error's message with its line breaks and runs of spaces made single spaces."""
    return " ".join(str(error).split())


def check_at_least(**bounds: tuple[float, float]) -> None:
    """``check_at_least(batch_size=(batch_size, 1), …)``: a ``ConfigError`` for the first
    argument whose value lies below its lowest allowed value."""
    for name, (value, lowest) in bounds.items():
        if value < lowest:
            raise ConfigError(f"{name} must be at least {lowest}, got {value}")
