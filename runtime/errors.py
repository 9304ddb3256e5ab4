"""The error types whose messages are meant for the user; the CLIs print them without a traceback.

They live in the runtime (the one torch-free distribution every part of pand depends on); :mod:`pand.errors`
re-exports them and adds the training side's own.
"""


class PandError(RuntimeError):
    """A problem with the user's input or environment, with a message that says what to do."""


class ArtifactError(PandError):
    """A stored artifact (bundle, anchors, cache, checkpoint) does not fit the run that wants to use it."""
