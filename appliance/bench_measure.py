"""``oncolens bench``'s timed loops: network-only calls on one preprocessed batch, the
whole end-to-end loop over a folder, and the top-1 predictions that agreement is made of.
Nothing here asserts a speed; it measures and reports.
"""
import collections
import logging
import time

import numpy as np

from oncolens.appliance.benchstats import latency_ms, shares
from oncolens.appliance.device_preprocess import stack_inputs
from oncolens.appliance.errors import OncoLensError, plural
from oncolens.appliance.pipeline import batched, prefetch, window
from oncolens.appliance.postprocess import finite_rows, top_k

log = logging.getLogger("oncolens.appliance.bench")  # the logger these lines always had

MIN_CALLS = 5  # every timed loop of calls times at least this many, whatever --min-seconds
# predict_all's index for an image whose output is not a number (NaN or infinity): it has no
# class (argmax of NaN is the first, read as "class 0" before 2026-12-08); unreadable is -1
NOT_A_NUMBER = -2


class Unreadable(object):
    """Image files that could not be read: each is warned about once, all are reported."""

    def __init__(self):
        self.files = collections.OrderedDict()

    def add(self, path, reason):
        if path not in self.files:
            self.files[path] = reason
            log.warning("bench: skipped an unreadable file: %s", reason)

    def add_items(self, items):
        for item in items:
            self.add(item.path, item.error)

    def report(self):
        return {"count": len(self.files),
                "files": [{"path": p, "reason": r} for p, r in self.files.items()]}


def predict_all(backend, preprocessor, files, batch_size=8, workers=2, unreadable=None):
    """Top-1 indices for ``files`` (failed files are -1, and noted in ``unreadable``; an
    output that is not a number is NOT_A_NUMBER)."""
    out = []
    for good, failed in batched(prefetch(files, preprocessor, workers), batch_size):
        if unreadable is not None:
            unreadable.add_items(failed)
        got = {}
        if good:
            probs = backend.infer(stack_inputs([i.tensor for i in good])).probs
            finite = finite_rows(probs)
            got = dict((i.index, int(np.argmax(p)) if ok else NOT_A_NUMBER)
                       for i, p, ok in zip(good, probs, finite))
        got.update((i.index, -1) for i in failed)
        out.extend(got[k] for k in sorted(got))
    return out


def not_numbers(pred):
    """How many of predict_all's answers were not a number."""
    return sum(1 for p in pred if p == NOT_A_NUMBER)


def agreement(pred, ref):
    """The share of images with a reference class (readable, a number) whose ``pred`` is the
    same (one that is not a number agrees with nothing); None when there are none."""
    pairs = [(p, r) for p, r in zip(pred, ref) if r >= 0]
    return round(sum(1 for p, r in pairs if p == r) / float(len(pairs)), 4) if pairs else None


def sample_batch(preprocessor, files, size, unreadable=None):
    """A batch of ``size`` real preprocessed images: the first readable ones (repeated when
    there are fewer); unreadable files on the way are skipped and noted."""
    unreadable = unreadable if unreadable is not None else Unreadable()
    tensors = []
    for item in prefetch(files, preprocessor, workers=0):
        if item.error is None:
            tensors.append(item.tensor)
            if len(tensors) == size:
                break
        else:
            unreadable.add(item.path, item.error)
    if not tensors:
        first = next(iter(unreadable.files.values()), "no files")
        raise OncoLensError("--images: none of the {} could be read; the first: {}".format(
            plural(len(files), "image file"), first))
    while len(tensors) < size:
        tensors.extend(tensors[:size - len(tensors)])
    return stack_inputs(tensors)


def network_only(backend, batch, warmup=3, min_seconds=3.0, min_iters=MIN_CALLS):
    """Images/s and per-call latency of ``backend.infer`` on one preprocessed batch."""
    for _ in range(warmup):
        backend.infer(batch)
    lat = []
    started = time.perf_counter()
    while len(lat) < min_iters or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        backend.infer(batch)
        lat.append(time.perf_counter() - t0)
    return {"network_ips": batch.shape[0] * len(lat) / sum(lat),
            "network_latency_ms": latency_ms(lat), "network_calls": len(lat)}


def end_to_end(backend, preprocessor, labels, files, batch_size, workers, warmup=3,
               unreadable=None):
    """The whole loop over ``files``: read + decode, preprocess (worker pool), batched
    inference, top-1 post-processing.  Per-image latency runs from the worker's start on a
    file to its result; stage shares are of the time each stage's work took.  First,
    untimed, ``warmup`` calls at ``batch_size`` (the first warmup x batch_size files, fewer
    in a smaller folder; none with 0), as --warmup says: it was max(warmup, batch_size)
    images, one call at batch 8, and one even with --warmup 0."""
    if warmup > 0:
        predict_all(backend, preprocessor, files[:warmup * batch_size], batch_size, 0,
                    unreadable)
    stages = [0.0, 0.0, 0.0, 0.0]
    lat, count = [], 0
    started = time.perf_counter()
    for good, failed in batched(prefetch(files, preprocessor, workers,
                                         depth=window(batch_size, workers)), batch_size):
        count += len(good)
        if unreadable is not None:
            unreadable.add_items(failed)
        if not good:
            continue
        t0 = time.perf_counter()
        probs = backend.infer(stack_inputs([item.tensor for item in good])).probs
        t1 = time.perf_counter()
        for item, row in zip(good, probs):
            top_k(row, labels, 1)
        t2 = time.perf_counter()
        stages[0] += sum(item.decode_s for item in good)
        stages[1] += sum(item.preprocess_s for item in good)
        stages[2] += t1 - t0
        stages[3] += t2 - t1
        lat.extend(t2 - item.started for item in good)
    wall = time.perf_counter() - started
    return {"end_to_end_ips": count / wall, "images": count, "seconds": round(wall, 6),
            "latency_ms": latency_ms(lat), "stage_share": shares(stages)}
