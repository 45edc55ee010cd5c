"""The training loop: class folders in, checkpoint + bundle (labels.txt, model.json) out."""
import logging
import os
import shutil
import time

import numpy as np

from oncolens import __version__
from oncolens.appliance.archs import build_model, canonical_arch, load_checkpoint
from oncolens.appliance.bundle import (MODEL_JSON, LABELS_TXT, new_model_info, sha256_file,
                                       write_labels, write_model_info)
from oncolens.appliance.errors import UsageError
from oncolens.appliance.preprocess import imagenet_preprocess
from oncolens.train import metrics
from oncolens.train.data import discover_classes
from oncolens.train.history import plot_history, read_history, write_history
from oncolens.train.recipe import (learning_rate, make_loaders, make_loss, make_optimizer,
                                   progress, set_lr, torch_module)
from oncolens.train.runtime import make_runtime, out_of_memory
from oncolens.train.synth import dataset_provenance
from oncolens.train.weights import initialise, normalisation

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"


def evaluate(model, loader, runtime, num_classes):
    """Run ``model`` over ``loader``: (mean loss, metrics summary, probabilities, targets)."""
    torch = torch_module()
    model.eval()
    losses, probs, targets = [], [], []
    with torch.no_grad():
        for images, target in loader:
            with runtime.autocast():
                logits = model(runtime.batch(images))
            logits = logits.float()
            losses.append(float(torch.nn.functional.cross_entropy(
                logits, target.to(runtime.device), reduction="sum")))
            probs.append(torch.softmax(logits, 1).cpu().numpy())
            targets.append(target.numpy())
    probs = np.concatenate(probs)
    targets = np.concatenate(targets)
    summary = metrics.summary(targets, probs.argmax(1), num_classes)
    return sum(losses) / len(targets), summary, probs, targets


class Schedule(object):
    """Learning rate per optimiser step; with ``--time-limit`` the cosine follows the clock."""

    def __init__(self, args, steps_per_epoch, start_epoch):
        self.args = args
        self.steps_per_epoch = steps_per_epoch
        self.step = start_epoch * steps_per_epoch
        self.start = time.time()
        self.budget = float(args.time_limit or 0) * 60.0
        self.warmup_seconds = None
        self.epoch_times = []

    @property
    def planned(self):
        return self.args.epochs

    def time_fraction(self):
        """Elapsed share of the budget after warm-up (0 without a budget)."""
        if not self.budget:
            return 0.0
        warm_steps = self.args.warmup_epochs * self.steps_per_epoch
        if self.step < warm_steps:
            return 0.0
        if self.warmup_seconds is None:
            self.warmup_seconds = time.time() - self.start
        used = time.time() - self.start - self.warmup_seconds
        return used / max(1e-9, self.budget - self.warmup_seconds)

    def next_lr(self):
        lr = learning_rate(self.args, self.step, self.steps_per_epoch, self.args.epochs,
                           self.time_fraction())
        self.step += 1
        return lr

    def epoch_done(self, seconds):
        """False when the budget has no room for another epoch as long as the last ones."""
        self.epoch_times.append(seconds)
        if not self.budget:
            return True
        recent = float(np.median(self.epoch_times[-3:]))
        return self.budget - (time.time() - self.start) >= recent


def _train_epoch(model, loader, optimizer, loss_fn, runtime, schedule, args, epoch):
    model.train()
    total, seen, start, accum = 0.0, 0, time.time(), args.accum_steps
    optimizer.zero_grad()
    batches = progress(loader, "epoch {}".format(epoch + 1), total=len(loader))
    for step, (images, target) in enumerate(batches):
        if step % accum == 0:
            set_lr(optimizer, schedule.next_lr())
        with runtime.autocast():
            logits = model(runtime.batch(images))
        loss = loss_fn(logits.float(), target.to(runtime.device))
        if accum > 1:
            loss = loss / accum
        if (step + 1) % accum == 0 or step + 1 == len(loader):
            runtime.step(loss, optimizer)
            optimizer.zero_grad()
        else:
            (runtime.scaler.scale(loss) if runtime.scaler else loss).backward()
        total += float(loss.detach()) * len(target) * accum
        seen += len(target)
        if args.print_freq and step % args.print_freq == 0:
            log.debug("epoch %d [%d/%d] loss %.4f", epoch + 1, step, len(loader),
                      float(loss.detach()) * accum)
    return total / max(1, seen), seen / max(1e-9, time.time() - start)


def _prepare_model_dir(args):
    best = os.path.join(args.model_dir, BEST)
    if os.path.exists(best) and not (args.overwrite or args.resume or args.evaluate):
        raise UsageError("--model-dir {} already holds a trained model: pass --overwrite to "
                         "replace it or --resume to continue it".format(args.model_dir))
    if not os.path.isdir(args.model_dir):
        os.makedirs(args.model_dir)


def _save(state, model_dir, is_best):
    torch = torch_module()
    path = os.path.join(model_dir, CHECKPOINT)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    if is_best:
        shutil.copyfile(path, os.path.join(model_dir, BEST))


def training_record(args, runtime, init, seconds, stopped):
    """The ``training`` block of model.json: the recipe and how the run went."""
    keys = ("epochs", "batch_size", "lr", "optimizer", "schedule", "warmup_epochs",
            "weight_decay", "label_smoothing", "class_weights", "sampler", "crop_scale",
            "colour_jitter", "stain_jitter", "no_rot90", "no_augment", "seed", "time_limit",
            "patience", "accum_steps", "low_memory")
    record = {k: getattr(args, k) for k in keys}
    record.update({"best_epoch": None, "init": init, "runtime": runtime.describe(),
                   "train_seconds": round(seconds, 1), "stopped": stopped,
                   "oncolens_version": __version__})
    return record


def write_bundle(args, classes, preprocess, best, training):
    """labels.txt and model.json beside the checkpoints."""
    write_labels(os.path.join(args.model_dir, LABELS_TXT), classes)
    training = dict(training, best_epoch=best["epoch"])
    info = new_model_info(
        args.arch, classes, args.resolution, preprocess,
        checkpoint={"file": BEST, "sha256": sha256_file(os.path.join(args.model_dir, BEST))},
        training=training,
        metrics={"val": {"accuracy": best["accuracy"], "macro_f1": best["macro_f1"],
                         "loss": best.get("loss")}},
        provenance=dataset_provenance(args.data))
    write_model_info(os.path.join(args.model_dir, MODEL_JSON), info)
    return info


def _better(summary, loss, best):
    if summary["macro_f1"] != best["macro_f1"]:
        return summary["macro_f1"] > best["macro_f1"]
    return loss < best.get("loss", float("inf"))


def _setup(args):
    torch = torch_module()
    if args.seed is not None:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.arch = canonical_arch(args.arch)
    if args.low_memory:
        args.workers = min(args.workers, 1)
        if args.accum_steps == 1 and args.batch_size > 8:
            args.accum_steps = int(np.ceil(args.batch_size / 8.0))
    if args.accum_steps < 1 or args.batch_size < args.accum_steps:
        raise UsageError("--accum-steps: expected 1..--batch-size, got {}".format(
            args.accum_steps))
    _prepare_model_dir(args)
    runtime = make_runtime(args.gpu, args.precision, args.channels_last)
    classes = discover_classes(args.data)
    mean, std = normalisation(args.arch)
    clahe = {"clip": float(args.clahe_clip), "tile": 8} if args.clahe else None
    preprocess = imagenet_preprocess(args.resolution, mean=mean, std=std, clahe=clahe)
    return runtime, classes, preprocess


def run_training(args):
    """Train as the command line says; returns the best epoch's validation metrics."""
    runtime, classes, preprocess = _setup(args)
    micro = args.batch_size // args.accum_steps
    train_loader, val_loader, samples = make_loaders(args, classes, preprocess, micro)
    model = build_model(args.arch, len(classes))
    init = {"source": "checkpoint"}
    if not args.resume:
        init = initialise(model, args.arch, args.pretrained, args.weights)
    model = runtime.model(model)
    optimizer = make_optimizer(args, model)
    loss_fn = make_loss(args, samples, len(classes), runtime.device)
    best = {"macro_f1": -1.0, "accuracy": 0.0, "epoch": -1, "loss": float("inf")}
    start_epoch, rows = args.start_epoch, []
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        model.load_state_dict(ckpt["state_dict"])
        if "optimizer" in ckpt and not args.evaluate:
            optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt.get("epoch", start_epoch)
        best = ckpt.get("best", best)
        init = ckpt.get("init", init)
        rows = [r for r in read_history(args.model_dir) if int(r["epoch"]) <= start_epoch]
    if args.evaluate:
        loss, summary, _, _ = evaluate(model, val_loader, runtime, len(classes))
        log.info("val loss %.4f accuracy %.4f macro-F1 %.4f", loss, summary["accuracy"],
                 summary["macro_f1"])
        return dict(summary, epoch=start_epoch)
    log.info("training %s on %d images (%s), %s, batch %d%s", args.arch, len(samples),
             ", ".join(classes), runtime.describe(), args.batch_size,
             " ({} x {})".format(args.accum_steps, micro) if args.accum_steps > 1 else "")
    try:
        best, seconds, stopped = _loop(args, model, optimizer, loss_fn, runtime, train_loader,
                                       val_loader, classes, preprocess, best, start_epoch,
                                       rows, init)
    except RuntimeError as exc:
        if out_of_memory(exc):
            raise UsageError("out of memory at batch size {} and {} px: pass --low-memory, or a "
                             "smaller -b/--batch-size or --resolution".format(
                                 micro, args.resolution))
        raise
    write_bundle(args, classes, preprocess, best,
                 training_record(args, runtime, init, seconds, stopped))
    plot_history(args.model_dir, read_history(args.model_dir))
    best = dict(best, train_seconds=seconds, stopped=stopped)
    return best


def _loop(args, model, optimizer, loss_fn, runtime, train_loader, val_loader, classes,
          preprocess, best, start_epoch, rows, init):
    schedule = Schedule(args, int(np.ceil(len(train_loader) / float(args.accum_steps))),
                        start_epoch)
    since_best, stopped, started = 0, "epochs", time.time()
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        train_loss, ips = _train_epoch(model, train_loader, optimizer, loss_fn, runtime,
                                       schedule, args, epoch)
        val_loss, summary, _, _ = evaluate(model, val_loader, runtime, len(classes))
        is_best = _better(summary, val_loss, best)
        since_best = 0 if is_best else since_best + 1
        if is_best:
            best = {"macro_f1": summary["macro_f1"], "accuracy": summary["accuracy"],
                    "epoch": epoch + 1, "loss": val_loss}
        lr = optimizer.param_groups[0]["lr"]
        rows.append({"epoch": epoch + 1, "lr": "{:.6g}".format(lr),
                     "train_loss": "{:.5f}".format(train_loss),
                     "val_loss": "{:.5f}".format(val_loss),
                     "val_accuracy": "{:.5f}".format(summary["accuracy"]),
                     "val_macro_f1": "{:.5f}".format(summary["macro_f1"]),
                     "epoch_seconds": "{:.1f}".format(time.time() - t0),
                     "images_per_second": "{:.1f}".format(ips), "best": int(is_best)})
        log.info("epoch %d/%d  lr %.2e  train loss %.4f (%.1f img/s)  val loss %.4f  acc %.4f  "
                 "macro-F1 %.4f  %.0fs%s", epoch + 1, args.epochs, lr, train_loss, ips,
                 val_loss, summary["accuracy"], summary["macro_f1"], time.time() - t0,
                 "  *best*" if is_best else "")
        _save({"epoch": epoch + 1, "arch": args.arch, "resolution": args.resolution,
               "classes": classes, "num_classes": len(classes), "state_dict": model.state_dict(),
               "accuracy": summary["accuracy"], "loss": val_loss,
               "optimizer": optimizer.state_dict(), "best": best, "macro_f1": summary["macro_f1"],
               "preprocess": preprocess, "init": init, "oncolens_version": __version__},
              args.model_dir, is_best)
        write_history(args.model_dir, rows)
        if args.patience and since_best >= args.patience:
            log.info("no better val macro-F1 for %d epochs: stopping early", args.patience)
            stopped = "patience"
            break
        if not schedule.epoch_done(time.time() - t0) and epoch + 1 < args.epochs:
            log.info("--time-limit %.1f min reached after %d epochs", args.time_limit, epoch + 1)
            stopped = "time-limit"
            break
    return best, time.time() - started, stopped
