"""Exceptions for problems with the user's input (data, configs, checkpoints).

The CLI prints these as one line naming the file and the problem; anything else is a bug and keeps
its traceback.
"""


class OANetError(Exception):
    """Base class of every user-facing oanet error."""


class DataError(OANetError, ValueError):
    """Bad or inconsistent data: a corrupt PNG, an undeclared segment id, an unknown category..."""


class ConfigError(OANetError, ValueError):
    """A bad config file, an unknown key, a bad override, or a checkpoint from another config."""
