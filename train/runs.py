"""model.json's ``training.runs``: every run that trained the model, the first and each
``--resume`` after it, with the recipe it used. model.json's other ``training`` keys give the
last run's flags; a model trained in parts needs the list to say how it was made.

Each checkpoint holds the list as far as its epoch (this run's entry included), so a
``--resume`` carries it on, and a run stopped by Ctrl-C or a crash stays on it with
``"stopped": null``, as far as its last finished epoch.

Also why a run stops (``stop_reason``, ``resumed_stop``, ``used_up_stop``) and the lines that
say so.
"""
import logging
import time

import numpy as np

from oncolens import __version__
from oncolens.appliance.errors import plural

log = logging.getLogger("oncolens.train.trainer")  # the stop lines, as the loop logged them


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def earlier_runs(ckpt):
    """The runs a resumed checkpoint records; for one that records none (made before they
    were, or by jetson-inference), one entry for all its epochs, ``recipe`` null."""
    if ckpt is None:
        return []
    if isinstance(ckpt.get("runs"), list):
        return [dict(run) for run in ckpt["runs"]]
    if not ckpt.get("epoch"):
        return []
    seconds = (ckpt.get("clock") or {}).get("train_seconds")
    return [{"start_epoch": ckpt.get("start_epoch"), "last_epoch": ckpt["epoch"],
             "train_seconds": None if seconds is None else round(float(seconds), 1),
             "stopped": None, "started": None, "ended": None, "runtime": None,
             "oncolens_version": ckpt.get("oncolens_version"), "recipe": None}]


def stop_reason(args, since_best, room, epoch):
    """Why the loop stops after ``epoch`` (0-based), by the tests it makes once the epoch is
    saved: "patience", "time-limit", "epochs", or None where it goes on."""
    if args.patience and since_best >= args.patience:
        return "patience"
    if epoch + 1 >= args.epochs:
        return "epochs"
    return None if room else "time-limit"


def trained_seconds(clock):
    """The seconds a checkpoint's ``clock`` (Schedule.state()) says were trained; 0.0 where
    it says nothing (no clock: jetson-inference's, or a run made before clocks were kept)."""
    return float((clock or {}).get("train_seconds") or 0.0)


def epochs_since_best(epoch, best_epoch):
    """Epochs trained after the best one, for --patience: 0 where no best epoch is named
    (None, or jetson-inference's -1)."""
    best_epoch = int(best_epoch or -1)
    return max(0, int(epoch or 0) - best_epoch) if best_epoch > 0 else 0


def budget_room(budget, elapsed, epoch_times):
    """Whether a --time-limit of ``budget`` seconds (0: none), ``elapsed`` of it trained, has
    room for another epoch as long as the last ones (``epoch_times``; none yet: any time
    left)."""
    if not budget:
        return True
    if not epoch_times:
        return elapsed < budget
    return budget - elapsed >= float(np.median([float(t) for t in epoch_times[-3:]]))


def resumed_stop(args, epoch, best_epoch, clock):
    """Why a --resume of a checkpoint at ``epoch`` (its best epoch ``best_epoch``, -1 or None
    where it names none, and its ``clock``) has no epoch left to train, by the rules that
    ended each epoch of its run (``stop_reason``): "epochs", "patience", "time-limit", or
    None where it trains on. Decided from the checkpoint alone, so the check made before
    anything is written (outputs) and the loop give the same answer; only --patience may
    differ, where adopt_best believed a model_best of another epoch than the checkpoint's
    best (the loop counts from that one) or dropped the best (the check has refused that
    run already when this says it has no epoch left)."""
    epoch = int(epoch or 0)
    if epoch >= args.epochs:
        return "epochs"
    room = budget_room(float(args.time_limit or 0) * 60.0, trained_seconds(clock),
                       (clock or {}).get("epoch_seconds"))
    return stop_reason(args, epochs_since_best(epoch, best_epoch), room, epoch - 1)


def used_up_stop(args, start_epoch, best, clock):
    """A resumed run with no epoch left, by --epochs, or by the budget or patience its
    checkpoint had used up already (resumed_stop, as outputs checked before anything
    was written): the reason (model.json's "stopped"), else None."""
    reason = resumed_stop(args, start_epoch, best.get("epoch"), clock)
    if reason == "time-limit":
        log.info("--time-limit %g min: the resumed run has trained %.0f s of it; no epoch left",
                 args.time_limit, trained_seconds(clock))
    elif reason == "patience":
        log.info("--patience %d: the resumed run has had no better epoch for %s; no "
                 "epoch left", args.patience,
                 plural(epochs_since_best(start_epoch, best.get("epoch")), "epoch"))
    return reason


def log_stop(args, reason, epochs):
    """The line that says why the loop stopped before --epochs: "patience" or "time-limit"."""
    if reason == "patience":
        log.info("no better epoch for %s (by val macro-F1, ties broken by lower val "
                 "loss): stopping early", plural(args.patience, "epoch"))
    else:
        log.info("--time-limit %g min reached after %s", args.time_limit,
                 plural(epochs, "epoch"))


class RunLog(object):
    """The runs before this one and this run's own entry, which each checkpoint updates."""

    def __init__(self, ckpt, start_epoch, recipe, runtime):
        self.earlier = earlier_runs(ckpt)
        # the time trained before this run, as the resumed checkpoint's clock says
        self.done = trained_seconds((ckpt or {}).get("clock"))
        self.entry = {"start_epoch": start_epoch, "last_epoch": start_epoch,
                      "train_seconds": 0.0, "stopped": None, "started": _now(), "ended": None,
                      "runtime": runtime, "oncolens_version": __version__, "recipe": recipe}

    def upto(self, last_epoch, seconds, stopped):
        """Every run so far, this one up to ``last_epoch``; ``seconds`` is the model's
        train_seconds then (the earlier runs' time included), ``stopped`` why this run ended
        there (None: it goes on)."""
        self.entry.update(last_epoch=last_epoch, stopped=stopped, ended=_now(),
                          train_seconds=round(max(0.0, seconds - self.done), 1))
        return self.earlier + [dict(self.entry)]
