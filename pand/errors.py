"""Error types whose messages are meant for the user (the CLIs print them without a traceback)."""


class PandError(RuntimeError):
    """A problem with the user's input or environment, with a message that says what to do."""


class DataError(PandError):
    """A dataset on disk is missing, incomplete or inconsistent."""


class ArtifactError(PandError):
    """A stored artifact (anchors, cache, checkpoint) does not fit the run that wants to use it."""
