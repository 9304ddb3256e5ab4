"""Error types whose messages are meant for the user (the CLIs print them without a traceback).

:class:`PandError` and :class:`ArtifactError` are defined by the runtime (:mod:`pand_runtime.errors`), so an error
raised on a device and one raised while training are the same type.
"""
from pand_runtime.errors import ArtifactError, PandError

__all__ = ["PandError", "ArtifactError", "DataError"]


class DataError(PandError):
    """A dataset on disk is missing, incomplete or inconsistent."""
