"""The random streams of a training run, drawn afresh for each epoch from (seed, epoch).

The data order, each image's augmentation and the dropout masks of epoch N depend on the
run's seed and on N alone, not on how many epochs this process has trained before: a
``--resume`` of a seeded run's checkpoint trains epoch N as the run left alone would have
(until 2026-12-08 each stream began again at the seed, so a resumed run replayed its first
epochs' order and augmentation). Each image's augmentation is drawn from its own stream,
(seed, epoch, its place in the epoch), so it does not depend on which data-loader worker
decodes it either.
"""
import numpy as np

ORDER, TORCH = 0, 1  # the streams drawn for an epoch: the data order, torch's own (dropout)
AUGMENT = 2


def stream_seed(seed, epoch, stream):
    """A 63-bit seed for ``stream`` of ``epoch`` in a run seeded with ``seed``."""
    state = np.random.SeedSequence([int(seed), int(epoch), stream]).generate_state(2)
    return (int(state[0]) << 31) ^ int(state[1])


def run_seed(seed):
    """--seed, or for a run without one a seed of its own (a resume of it draws another)."""
    if seed is not None:
        return int(seed)
    return int(np.random.SeedSequence().generate_state(1)[0])


class EpochSampler(object):
    """The train loader's sampler: ``sampler`` (shuffled or weighted, drawing from
    ``generator``) in an order seeded by (seed, epoch), each index with the key of its
    image's augmentation stream; ``start_epoch`` says which epoch comes next."""

    def __init__(self, sampler, generator, seed):
        self.sampler, self.generator, self.seed = sampler, generator, seed
        self.epoch = 0

    def start_epoch(self, epoch):
        """Seed the order of ``epoch`` (0-based) and torch's own stream (dropout) for it."""
        import torch
        self.epoch = epoch
        torch.manual_seed(stream_seed(self.seed, epoch, TORCH))

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        self.generator.manual_seed(stream_seed(self.seed, self.epoch, ORDER))
        for place, index in enumerate(self.sampler):
            yield index, (self.seed, self.epoch, AUGMENT, place)


class SeededImages(object):
    """A training dataset read by EpochSampler's (index, key) pairs: each image augmented
    from its own stream, ``key``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, key = item
        self.dataset.transform.rng = np.random.default_rng(list(key))
        return self.dataset[index]
