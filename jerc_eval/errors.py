"""Project errors. Each kind has its own exit code; the CLI prints ``error: <message>`` on one line."""
from __future__ import annotations


class JercError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` names the problem and the fix."""

    exit_code = 3


class UsageError(JercError):
    """Bad flags, config keys or option values."""

    exit_code = 2


class UnknownNameError(UsageError):
    """An encoder, dataset, suite, corruption, probe or reporter name that nothing registered."""

    exit_code = 4


class CheckpointError(JercError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the architecture."""

    exit_code = 5


class DataError(JercError):
    """Input images or datasets that cannot be evaluated (too small, wrong shape, missing files)."""

    exit_code = 6


class PluginError(JercError):
    """A plugin that fails to load or implements a hook that does not exist."""

    exit_code = 7


class OfflineError(JercError):
    """A hub id was given but no network is reachable."""

    exit_code = 8


EXIT_CODES = {
    0: "success (also when stdout's reader goes away)",
    1: "release gate failed",
    2: "usage error (flags, config, option values)",
    3: "internal error (a bug: please report it with --debug output)",
    4: "unknown name (encoder, dataset, suite, corruption, probe, reporter)",
    5: "checkpoint error (missing, unreadable, unsafe, wrong architecture)",
    6: "data error (images too small, labels not integers 0..K-1, malformed or missing dataset files)",
    7: "plugin error (import failure under --strict-plugins, misspelled hook, a plugin that raises)",
    8: "offline: a hub id needs the network; pass a local file instead",
    130: "interrupted (Ctrl-C)",
    143: "terminated (SIGTERM)",
}
