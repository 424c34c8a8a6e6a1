"""The index part: FAISS vector search (exact or approximate, CPU or GPU) and the in-process
cache of one store's retrievable items kept in step with SQL.

`VectorIndex` (:mod:`skillmem.index.vector`) knows only vectors and int64 ids.
`MemoryIndex` (:mod:`skillmem.index.memory`) binds one to a store: which items are
retrievable, their rows' text and rendering, the audit high-water mark it reflects, the
store identity it was built for, saving and loading next to the database.
"""

from .vector import EXACT_MAX, IndexCorrupt, VectorIndex

__all__ = ["EXACT_MAX", "IndexCorrupt", "VectorIndex"]
