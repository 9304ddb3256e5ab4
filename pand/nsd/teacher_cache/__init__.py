"""Teacher-feature cache with augmentation replay for Stage NSD.

The frozen teacher is 100-200x more expensive than the student, and the live teacher runs it on every
training image in every epoch. With ``nsd.teacher_cache.views = V > 0`` it runs once per *(image, view)*
instead:

1. **Build** (:func:`build_teacher_cache`, before training; under torchrun every rank encodes its share of the
   shards and rank 0 writes the manifest after a barrier). For every training image ``i`` and view
   ``v < V`` the training pipeline's own augmentation is replayed: :class:`pand.engine.loaders.IndexedDataset` draws the
   random parameters of ``(i, v)`` from ``mix_seed(trainer.seed, v, i)`` only, so the pixels are a pure function of
   ``(seed, v, i)``. Each image file is decoded once for its ``V`` views (the build asks for ``(i, 0..V-1)`` in a
   row and every view transforms a copy of the decoded image; decoding draws no random numbers, so the pixels are
   those of ``dataset[i]`` under the view's seed, bit for bit). Those pixels go through the very same
   :class:`~pand.models.teacher_source.LiveTeacher` path (re-normalisation, resize, channels-last, AMP) and the
   L2-normalised features ``[N, V, D_t]`` are written as
   safetensors (fp16 by default, ``nsd.teacher_cache.dtype=fp32`` for exact parity) in shards of
   ``nsd.teacher_cache.shard_size`` images: ``<cache_dir>/nsd_teacher/<key[:32]>/shard-00000.safetensors`` ...
   plus ``manifest.json``, written last. Every file is written atomically, so a crash keeps the finished shards
   and the next build only computes the missing ones (a tqdm bar counts the views encoded).
2. **Train** (:class:`CachedTeacher`, the :class:`~pand.models.teacher_source.TeacherSource` the engine sees). Every
   step samples a view per image: in epoch ``e`` image ``i`` uses view ``replay_views(seed, e, N, V)[i]``
   (:func:`pand.engine.loaders.replay_views`: each image cycles through its ``V`` views in its own random order, redrawn
   every ``V`` epochs, so one batch mixes views and no view is over-used). The engine asks
   :meth:`CachedTeacher.views` before the epoch and hands the per-image views to the
   :class:`~pand.engine.loaders.ViewSampler`, so the data pipeline reproduces exactly the pixels the teacher encoded;
   :meth:`CachedTeacher.features` looks ``(index, view)`` up in memory-mapped shards (a numpy memmap of each file's
   raw tensor region: only the rows of the batch are read, nothing is loaded whole, and only the ``[B, D_t]`` batch
   is moved to the GPU) and returns float32 on the images' device.

**Key** (same rules as the PSC cache, :mod:`pand.psc.features`): sha256 of the teacher identity, its precision and
the teacher input pipeline (student mean/std -> teacher mean/std, size, interpolation), the dataset's sample list
(``samples_hash``), the training transform's description, ``trainer.seed``, ``V``, the storage dtype and the shard
size, plus the content digest of the image files (:func:`pand.utils.digest.content_hash`: BLAKE2b of every
file's bytes, :mod:`pand.utils.digest`, so an image whose content changes gives another key even when its size and
mtime are restored). Any change gives another directory; a stale or
damaged shard is recomputed, never trusted.

**Integrity.** Every shard stores the sha256 of its feature bytes, verified when the cache is built or reused and
when it is opened (once per file and process while the file is unchanged), so permuted rows, zeroed shards or an
edited value are recomputed (build) or refused (open); NaN/inf features are refused when the shard is encoded,
naming the images. **Locking.** A single-process build holds ``<cache_dir>/nsd_teacher/<key[:32]>/.pand.lock``
(:mod:`pand.utils.lock`): a second run building the same entry is refused, naming the holder's pid. (A
distributed build is not locked against other launches.)

**Choosing V.** 8-16 views are the recommended range: the teacher cost becomes ``V/E`` of the live one (16/300 for
the reference's 300 epochs) while the student still sees 8-16 distinct augmentations of every image, each paired
with the teacher's features of exactly those pixels. ``V = 0`` (the default) keeps the live teacher.
``nsd.teacher_cache.views=auto`` decides per run (:mod:`pand.nsd.teacher_cache_auto`): before training it measures
the teacher's forward and the student's step per batch on a few training batches (RNG states restored, so the seeded
run is unchanged), projects the end-to-end time of live (``E`` epochs of teacher + student) against a
``V = min(8, E)``-view cache (``V x N`` teacher forwards, then ``E`` epochs of student steps + lookups) and uses
the cache only when it is projected at least 10% faster; the choice, the numbers and the reason are printed and
recorded (``<nsd dir>/teacher_cache_choice.json``, ``metrics.jsonl``, ``summary.json``), and a resumed run reuses
it. Whether the cache pays depends on the teacher's cost next to the student's step and on ``E / V``: a teacher
much cheaper than the student's step is not worth caching; a ViT-B/16 teacher of a 64 px ResNet-18 is (5.9x,
``bench/nsd_cache.py``).

**Disk / memory.** ``N * V * D_t * 2`` bytes in fp16: 10k images x 16 views x 1024 dims = 328 MB. Reads are
memory-mapped, so the resident memory is the OS page cache, not a copy per process.

The CUDA paths (pinned host buffers with non-blocking copies, teacher AMP/channels-last during the build) are covered
by tests/nsd/test_nsd_cuda.py (marker ``gpu``, skipped without a CUDA device); multi-rank builds are exercised with
gloo on CPU (2 processes, and 2 torchrun "nodes" on one machine sharing one cache directory).

Modules: :mod:`~pand.nsd.teacher_cache.format` (key, directory, shard format and checks),
:mod:`~pand.nsd.teacher_cache.build` (:func:`build_teacher_cache`), :mod:`~pand.nsd.teacher_cache.lookup`
(:class:`TeacherFeatureCache`, :class:`CachedTeacher`) and :mod:`~pand.nsd.teacher_cache.source`
(:func:`maybe_cache_teacher`, the engine's hook).
"""
from .build import build_teacher_cache
from .format import (
    AUTO, CACHE_SUBDIR, DTYPES, FORMAT, MANIFEST, RECOMMENDED_VIEWS, teacher_cache_dir, teacher_cache_key,
    teacher_cache_meta,
)
from .format import _read_header  # noqa: F401 - tests/nsd/test_nsd_multinode.py reads shard headers with it
from .lookup import CachedTeacher, TeacherFeatureCache
from .source import maybe_cache_teacher

__all__ = [
    "AUTO", "CACHE_SUBDIR", "DTYPES", "FORMAT", "MANIFEST", "RECOMMENDED_VIEWS", "teacher_cache_meta",
    "teacher_cache_key", "teacher_cache_dir", "build_teacher_cache", "TeacherFeatureCache", "CachedTeacher",
    "maybe_cache_teacher",
]
