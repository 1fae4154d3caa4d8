"""Errors that come from what the user asked for, reported as a message rather than a traceback."""


class ConfigError(ValueError):
    """A config value or an input that cannot work; the message names it and says what to do."""


class JobFailed(RuntimeError):
    """A job of a multirun stopped with a message; Hydra records it as failed and goes on."""
