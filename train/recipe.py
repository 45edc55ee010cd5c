"""The pieces of a training run: data loaders, loss, optimizer and learning-rate schedule.

The defaults are the recipe that works for small, unbalanced medical sets on a CPU:
class-weighted cross-entropy (label smoothing 0.1), AdamW, a short linear warm-up then a
cosine decay, augmentation, and the best epoch chosen by validation macro-F1.
"""
import logging
import math
import os
import signal
import time

import numpy as np

from oncolens.appliance.errors import MissingDependency, UsageError, plural
from oncolens.appliance.preprocess import Preprocessor
from oncolens.train.augment import TrainAugment
from oncolens.train.data import (CachedDataset, FolderDataset, balanced_class_weights,
                                 cache_side, class_counts, list_samples, load_resized,
                                 looks_greyscale)
from oncolens.train.runs import budget_room, trained_seconds
from oncolens.train.seeding import EpochSampler, SeededImages, run_seed

log = logging.getLogger(__name__)

CACHE_LIMIT_BYTES = 2 << 30


def torch_module():
    try:
        import torch
    except ImportError:
        raise MissingDependency("torch", "oncolens train", "pip install 'oncolens[train]'")
    return torch


def progress(iterable, desc, total=None):
    """tqdm when installed and on a terminal, else the iterable itself."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None, dynamic_ncols=True)


def _leave_stop_to_main(worker_id=None):
    """A data-loader worker that gets SIGTERM exits quietly, as torch has it do when its own
    main process sends it: a stop sent to the whole process group (systemd's, ``kill --
    -PGID``) would otherwise kill it by the signal, which torch reports as the worker's
    failure in a traceback over the main process's own stop (one line, the epoch kept)."""
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum, frame):
    os._exit(0)


def _use_cache(args, n_images, side):
    if args.cache == "off" or args.low_memory:
        return False
    estimate = n_images * side * side * 3 * 1.5
    if args.cache == "auto" and estimate > CACHE_LIMIT_BYTES:
        log.info("not caching %d training images in memory (~%.1f GB); pass --cache on to force",
                 n_images, estimate / 1e9)
        return False
    return True


def resolve_orientation(args, samples):
    """--orientation auto: 'fixed' for greyscale (scanner) images, 'free' for colour ones."""
    if args.orientation == "auto":
        if looks_greyscale(samples):
            args.orientation = "fixed"
            log.info("--orientation auto: the training images look greyscale (a scan has an up "
                     "and a down), so only left-right flips")
        else:
            args.orientation = "free"
            log.info("--orientation auto: the training images look colour (microscopy), so "
                     "flips both ways and 90-degree turns")
    return args.orientation


def augment_options(args):
    if args.no_augment:
        return {"scale": (1.0, 1.0), "flip": False, "rot90": False, "colour": 0.0, "stain": 0.0}
    free = args.orientation != "fixed"
    return {"scale": (args.crop_scale, 1.0), "flip": True, "vflip": free,
            "rot90": free and not args.no_rot90,
            "colour": args.colour_jitter, "stain": args.stain_jitter,
            "trivial": args.trivial_augment}


def make_loaders(args, classes, preprocess, micro_batch):
    """(train loader, val loader, training samples); with ``--final-fit`` the training samples
    are train/ and val/ together and there is no val loader (None).

    The train loader's batches are whole steps of ``-b`` images (an incomplete last one is
    dropped, unless it is the only one), which the trainer splits into ``--accum-steps``
    micro-batches; val/ is read in ``micro_batch`` images at a time."""
    torch = torch_module()
    res = args.resolution
    pre = Preprocessor(preprocess, (3, res, res))
    samples = list_samples(os.path.join(args.data, "train"), classes)
    val_samples = list_samples(os.path.join(args.data, "val"), classes)
    if args.final_fit:
        log.info("--final-fit: training on train/ (%s) and val/ (%d) together; no epoch "
                 "is chosen on val/, the last one is kept", plural(len(samples), "image"),
                 len(val_samples))
        samples, val_samples = samples + val_samples, None
    resolve_orientation(args, samples)
    augment = TrainAugment(pre, args.seed, augment_options(args))
    side = cache_side(res, preprocess.get("crop_ratio", 0.875))
    clahe = preprocess.get("clahe")
    if _use_cache(args, len(samples), side):
        train_ds = CachedDataset(samples, augment, side, clahe,
                                 progress=lambda it: progress(it, "caching train images"))
    else:
        train_ds = FolderDataset(samples, augment, loader=lambda p: load_resized(p, side, clahe))
    gen = torch.Generator()  # seeded for each epoch (EpochSampler.start_epoch)
    if args.sampler == "weighted":
        weights = balanced_class_weights(samples, len(classes))[[t for _, t in samples]]
        sampler = torch.utils.data.WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double), len(samples), replacement=True,
            generator=gen)
    else:
        sampler = torch.utils.data.RandomSampler(train_ds, generator=gen)
    sampler = EpochSampler(sampler, gen, run_seed(args.seed))
    train = torch.utils.data.DataLoader(
        SeededImages(train_ds), batch_size=args.batch_size, sampler=sampler,
        generator=gen,  # its workers' seeds drawn from it, not from torch's (dropout)
        drop_last=len(samples) > args.batch_size, num_workers=args.workers,
        worker_init_fn=_leave_stop_to_main if args.workers else None,
        persistent_workers=bool(args.workers))
    val = None if val_samples is None else _val_loader(args, val_samples, pre, micro_batch)
    return train, val, samples


def _val_loader(args, samples, pre, micro_batch):
    return torch_module().utils.data.DataLoader(FolderDataset(samples, pre),
                                                batch_size=micro_batch, shuffle=False,
                                                num_workers=min(args.workers, 1),
                                                worker_init_fn=_leave_stop_to_main
                                                if args.workers else None)


def make_val_loader(args, classes, preprocess, micro_batch):
    """val/ alone, for -e/--evaluate (which reads nothing of train/)."""
    res = args.resolution
    samples = list_samples(os.path.join(args.data, "val"), classes)
    return _val_loader(args, samples, Preprocessor(preprocess, (3, res, res)), micro_batch)


def make_loss(args, samples, num_classes, device):
    """Cross-entropy, weighted by inverse class frequency unless told otherwise."""
    torch = torch_module()
    weight = None
    if args.class_weights == "balanced" and args.sampler != "weighted":
        w = balanced_class_weights(samples, num_classes)
        weight = torch.as_tensor(w, dtype=torch.float32, device=device)
        log.info("class weights %s (counts %s)", np.round(w, 3).tolist(),
                 class_counts(samples, num_classes).tolist())
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=args.label_smoothing)


def make_optimizer(args, model, head=()):
    """AdamW or SGD; no weight decay on biases and norms.

    With ``head`` (the parameters of the new classifier layer) and ``args.body_lr_ratio``
    other than 1, every other parameter learns at that fraction of the scheduled rate
    (layer-wise rates for fine-tuning pretrained weights); each group's ``lr_scale`` says so.
    The head's groups come first, so ``param_groups[0]`` holds the scheduled rate.
    """
    torch = torch_module()
    ratio = args.body_lr_ratio
    head_ids = {id(p) for p in head}
    split = ratio != 1.0 and bool(head_ids)
    buckets = {}
    for param in model.parameters():
        full = not split or id(param) in head_ids
        buckets.setdefault((full, param.ndim <= 1), []).append(param)
    groups = [{"params": buckets[key], "weight_decay": 0.0 if key[1] else args.weight_decay,
               "lr_scale": 1.0 if key[0] else ratio}
              for key in sorted(buckets, key=lambda k: (not k[0], k[1]))]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, args.lr, momentum=args.momentum)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, args.lr)
    raise UsageError("--optimizer: expected adamw or sgd, got {!r}".format(args.optimizer))


def load_optimizer(args, optimizer, saved):
    """The resumed run's optimizer state (AdamW's moments, SGD's momentum buffers) under this
    run's settings: loading a state also brings back each group's weight decay, momentum ...
    of the run that saved it, which would silently override --wd and --momentum."""
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(saved)
    except ValueError as exc:  # other parameter groups (a jetson-inference checkpoint)
        log.warning("--resume %s: its optimizer state does not fit this run (%s): the "
                    "optimizer starts afresh, the weights go on", args.resume, exc)
        return
    for group, own in zip(optimizer.param_groups, settings):
        group.update(own)


def learning_rate(args, step, steps_per_epoch, planned_epochs, time_fraction=0.0):
    """The rate for optimiser step ``step`` (0-based) of a ``planned_epochs`` run.

    With a time budget, ``time_fraction`` (elapsed / budget) drives the cosine when it is
    ahead of the epoch count, so the rate reaches its floor when the time is up.
    """
    epoch = step / float(max(1, steps_per_epoch))
    if args.schedule == "step":  # jetson-inference: /10 every 30 epochs
        return args.lr * (0.1 ** (int(epoch) // 30))
    warmup = float(args.warmup_epochs)
    if warmup > 0 and epoch < warmup:
        return args.lr * (epoch + 1.0 / max(1, steps_per_epoch)) / warmup
    span = max(1e-9, planned_epochs - warmup)
    progress_ = max((epoch - warmup) / span, time_fraction)
    progress_ = min(1.0, max(0.0, progress_))
    floor = args.lr * args.min_lr_ratio
    return floor + (args.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress_))


def set_lr(optimizer, lr):
    """Set the scheduled rate ``lr``, scaled per group by its ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class Schedule(object):
    """Learning rate per optimiser step; with ``--time-limit`` the cosine follows the clock.

    ``resumed`` is the checkpoint's ``clock`` (``state()``): the time a resumed run had
    already trained counts against the budget, and its cosine goes on where it was."""

    def __init__(self, args, steps_per_epoch, start_epoch, resumed=None):
        resumed = resumed or {}
        self.args = args
        self.steps_per_epoch = steps_per_epoch
        self.step = start_epoch * steps_per_epoch
        done = trained_seconds(resumed)
        self.start = time.time() - done
        self.budget = float(args.time_limit or 0) * 60.0
        self.warmup_seconds = resumed.get("warmup_seconds")
        warm_steps = self._warm_steps()
        if self.warmup_seconds is None and self.step and self.step >= warm_steps:
            # a checkpoint that does not say: its warm-up's share of the time trained
            self.warmup_seconds = done * warm_steps / float(self.step)
        self.epoch_times = [float(t) for t in resumed.get("epoch_seconds") or []]

    @property
    def planned(self):
        return self.args.epochs

    def _warm_steps(self):
        return self.args.warmup_epochs * self.steps_per_epoch

    def elapsed(self):
        """Seconds trained, the resumed run's included."""
        return time.time() - self.start

    def time_fraction(self):
        """Elapsed share of the budget after warm-up (0 without a budget)."""
        if self.step < self._warm_steps():
            return 0.0
        if self.warmup_seconds is None:
            self.warmup_seconds = self.elapsed()
        if not self.budget:
            return 0.0
        used = self.elapsed() - self.warmup_seconds
        return used / max(1e-9, self.budget - self.warmup_seconds)

    def next_lr(self):
        lr = learning_rate(self.args, self.step, self.steps_per_epoch, self.args.epochs,
                           self.time_fraction())
        self.step += 1
        return lr

    def room(self):
        """False when the budget has no room for another epoch as long as the last ones."""
        return budget_room(self.budget, self.elapsed(), self.epoch_times)

    def epoch_done(self, seconds):
        """Record an epoch's time; then ``room()``."""
        self.epoch_times.append(seconds)
        return self.room()

    def state(self):
        """What a checkpoint records for --resume (its ``clock``)."""
        return {"train_seconds": self.elapsed(), "warmup_seconds": self.warmup_seconds,
                "epoch_seconds": self.epoch_times[-3:]}
