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


def make_dir(path, what: str = "output folder"):
    """``Path(path)`` created with its parents; ConfigError naming it when that is impossible
    (a file in the way, no permission) instead of an OSError traceback."""
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError)) else (exc.strerror or exc)
        raise ConfigError(f"{path}: cannot create the {what} ({reason})") from None
    return path
