"""Teacher sources the NSD tests wrap around a real one (a uniquely named module, importable from any test file)."""


class NaNAt:
    """A teacher source whose features are NaN at one ``(epoch, step)`` and equal to ``inner``'s otherwise."""

    def __init__(self, inner, epoch, step):
        self.inner, self.at, self.epoch, self.step = inner, (epoch, step), 0, 0
        self.embed_dim = inner.embed_dim

    def set_epoch(self, epoch):
        self.epoch, self.step = epoch, 0
        self.inner.set_epoch(epoch)

    def views(self, epoch, count):
        return self.inner.views(epoch, count)

    def features(self, images, indices):
        f = self.inner.features(images, indices)
        hit = (self.epoch, self.step) == self.at
        self.step += 1
        return f * float("nan") if hit else f
