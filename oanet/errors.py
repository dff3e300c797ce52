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
    """``Path(path)`` created with its parents and writable; ConfigError naming it when that is
    impossible (a file in the way, no permission, a read-only disk) instead of an OSError traceback.
    Commands call it on their outputs before the work starts, not after."""
    import os
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError)) else (exc.strerror or exc)
        raise ConfigError(f"{path}: cannot create the {what} ({reason})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: the {what} is not writable")
    return path


def check_output_file(path, what: str = "output file"):
    """``Path(path)`` once it is sure a file can be written there (its folder is created): a
    ConfigError naming it for a folder in the way or an unwritable folder, before any work."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; the {what} must be a file name")
    make_dir(path.parent, f"folder of the {what}")
    return path


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the path(s) it names and the system's reason."""
    if exc.filename is None:
        return str(exc)
    where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
    return f"{where}: {exc.strerror or exc}"
