"""Error types whose messages are meant for the user (the CLIs print them without a traceback).

:class:`PandError` and :class:`ArtifactError` are defined by the runtime (:mod:`pand_runtime.errors`), so an error
raised on a device and one raised while training are the same type. Every error here is a :class:`PandError`, so a
command line catches that one type.
"""
from pand_runtime.errors import ArtifactError, PandError

__all__ = ["PandError", "ArtifactError", "ConfigError", "DataError"]


class ConfigError(PandError):
    """A configuration problem found before any work starts (unknown key, wrong type, bad choice, missing value)."""


class DataError(PandError):
    """A dataset on disk is missing, incomplete or inconsistent."""
