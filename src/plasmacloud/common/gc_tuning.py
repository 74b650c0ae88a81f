"""The cyclic garbage collector set up for a long-running server process.

A request allocates thousands of containers (parsed messages, parameter tuples, results,
futures) that live until its response is sent: at the default threshold they set off a
young collection every 700 allocations, each walking them all again, and the occasional
full one walks every module and object of the process too (FlareDB: ~15% of a bulk
insert's CPU on every node; Chainfire: 4.5-7.7% of the leader's, both measured with
perf). Everything that exists once a server has started lives as long as the process, so
it is frozen out of collections; and young collections run every GC_THRESHOLD
allocations. Refcounting still frees everything that is not part of a cycle at once, so
memory is not held longer.
"""

from __future__ import annotations

import gc

GC_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze what exists now and raise the young-generation threshold (call once, when
    the server process has imported and built what it keeps)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)
