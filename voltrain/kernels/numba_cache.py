"""numba's on-disk cache for the kernels, invalidated by an edit to any kernel file.

numba stamps a cached function with its own source file only, so a kernel that inlines a
helper from another file (the resampling kernels call ``counter_rng``) kept running the
old helper after that file changed. ``KernelCacheLocator`` stamps every cached function of
this package with a hash of all of its numba source files instead: any edit recompiles
them all, once.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from numba.core import config as numba_config
from numba.core.caching import CacheImpl, InTreeCacheLocator

KERNELS_DIR = Path(__file__).resolve().parent


def sources_stamp(directory: Path) -> str:
    """A hash of the names and contents of the ``.py`` files in ``directory`` that use
    numba."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.py")):
        text = path.read_bytes()
        if b"numba" in text:
            digest.update(path.name.encode() + b"\0" + text + b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=8)
def _stamp_of(directory: Path) -> str:
    return sources_stamp(directory)


class KernelCacheLocator(InTreeCacheLocator):
    """Caches in ``__pycache__`` (or ``NUMBA_CACHE_DIR``) as numba does, stamped with
    ``sources_stamp`` of the whole ``directory`` (this package)."""

    directory: Path = KERNELS_DIR

    def __init__(self, py_func, py_file):
        super().__init__(py_func, py_file)
        if numba_config.CACHE_DIR:
            subpath = self.get_suitable_cache_subpath(py_file)
            self._cache_path = os.path.join(numba_config.CACHE_DIR, subpath)

    def get_source_stamp(self) -> str:
        return _stamp_of(self.directory)

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve().parent != cls.directory:
            return None
        return super().from_function(py_func, py_file)


def install(locator: type[KernelCacheLocator] = KernelCacheLocator) -> None:
    """Make numba ask ``locator`` first (idempotent)."""
    if locator not in CacheImpl._locator_classes:
        CacheImpl._locator_classes.insert(0, locator)
