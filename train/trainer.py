"""The training loop: class folders in, checkpoint + bundle (labels.txt, model.json) out."""
import logging
import os
import time

import numpy as np

from oncolens import __version__
from oncolens.appliance.archs import build_model, canonical_arch
from oncolens.appliance.cliutil import signals_held
from oncolens.appliance.errors import UsageError, plural
from oncolens.appliance.preprocess import Preprocessor, imagenet_preprocess
from oncolens.train import metrics
from oncolens.train.choices import (check_args, check_batch_of_one, check_input_size,
                                    check_resume, freeze_choice, load_resume, resolve_epochs,
                                    run_classes, settle_augmentation)
from oncolens.train.ema import WeightAverage
from oncolens.train.flags import low_memory_accum
from oncolens.train.freeze import freeze_early_layers, head_parameters
from oncolens.train.history import (history_row, plot_history, read_history, val_text,
                                    write_history)
from oncolens.train.outputs import (BEST, adopt_best, check_model_dir, prepare_model_dir,
                                    recipe_flags, save_checkpoint, training_record,
                                    write_bundle)
from oncolens.train.precheck import check_classes, check_images
from oncolens.train.recipe import (Schedule, load_optimizer, make_loaders, make_loss,
                                   make_optimizer, make_val_loader, progress, set_lr,
                                   torch_module)
from oncolens.train.runs import (RunLog, epochs_since_best, log_stop, stop_reason,
                                 trained_seconds, used_up_stop)
from oncolens.train.runtime import make_runtime, out_of_memory
from oncolens.train.temperature import (calibrate_checkpoint, remove_temperature,
                                        unscaled_state_dict)
from oncolens.train.weights import initialise, normalisation, zero_init_residual

log = logging.getLogger(__name__)


def evaluate(model, loader, runtime, num_classes):
    """Run ``model`` over ``loader``: (mean loss, metrics summary, probabilities, targets).

    In fp32 whatever precision the training steps use: the best epoch is chosen on the figures
    the exported (ONNX, fp32) model and ``oncolens evaluate`` give. bf16 autocast moved EfficientNet-Lite0's val macro-F1 by up to
    0.04 against fp32 on BUSI (docs/RESULTS.md, "Drawing the classes equally often").
    """
    torch = torch_module()
    model.eval()
    losses, probs, targets = [], [], []
    with torch.no_grad():
        for images, target in loader:
            logits = model(runtime.batch(images)).float()
            losses.append(float(torch.nn.functional.cross_entropy(
                logits, target.to(runtime.device), reduction="sum")))
            probs.append(torch.softmax(logits, 1).cpu().numpy())
            targets.append(target.numpy())
    probs = np.concatenate(probs)
    targets = np.concatenate(targets)
    summary = metrics.summary(targets, probs.argmax(1), num_classes)
    return sum(losses) / len(targets), summary, probs, targets


def _mixed_loss(model, images, target, loss_fn, runtime, mixup, rng):
    """The batch's loss; with ``mixup`` > 0, on pairs of images blended by a Beta(a, a) weight."""
    images, target = runtime.batch(images), target.to(runtime.device)
    if mixup <= 0:
        with runtime.autocast():
            logits = model(images)
        return loss_fn(logits.float(), target)
    lam = float(rng.beta(mixup, mixup))
    perm = rng.permutation(len(target))
    torch = torch_module()
    index = torch.as_tensor(perm, device=images.device)
    with runtime.autocast():
        logits = model(images * lam + images[index] * (1.0 - lam)).float()
    return lam * loss_fn(logits, target) + (1.0 - lam) * loss_fn(logits, target[index])


def _micro_batches(images, target, micro):
    """The step's --accum-steps micro-batches of ``micro`` images; a last one of a single
    image (an only step of an odd size) joins the one before: batch norm cannot train on
    one value per channel."""
    parts = list(zip(images.split(micro), target.split(micro)))
    if len(parts) > 1 and len(parts[-1][1]) == 1:
        torch = torch_module()
        (a, ta), (b, tb) = parts[-2], parts[-1]
        parts[-2:] = [(torch.cat([a, b]), torch.cat([ta, tb]))]
    return parts


def _train_epoch(model, loader, optimizer, loss_fn, runtime, schedule, args, epoch, ema=None):
    """One pass over ``loader``, whose batches are the steps (``-b`` images each): with
    --accum-steps N each is split into N micro-batches whose gradients add up."""
    model.train()
    total, seen, start, accum = 0.0, 0, time.time(), args.accum_steps
    # -p given: its lines at INFO; left at its default, every 10 batches at DEBUG
    freq, level = (10, logging.DEBUG) if args.print_freq is None else \
        (args.print_freq, logging.INFO)
    rng = np.random.default_rng(None if args.seed is None else args.seed * 1000 + epoch)
    loader.sampler.start_epoch(epoch)  # the epoch's order, augmentation, dropout: seeding.py
    optimizer.zero_grad()
    batches = progress(loader, "epoch {}".format(epoch + 1), total=len(loader))
    micro = max(1, args.batch_size // accum)
    for step, (images, target) in enumerate(batches):
        set_lr(optimizer, schedule.next_lr())
        step_loss = 0.0
        parts = _micro_batches(images, target, micro)
        for index, (part, part_target) in enumerate(parts):
            # each micro-batch's mean loss, weighted by its share of the step's images
            loss = _mixed_loss(model, part, part_target, loss_fn, runtime, args.mixup,
                               rng) * (len(part_target) / float(len(target)))
            if index + 1 < len(parts):
                (runtime.scaler.scale(loss) if runtime.scaler else loss).backward()
            else:
                runtime.step(loss, optimizer)
            step_loss += float(loss.detach())
        optimizer.zero_grad()
        if ema is not None:
            ema.update(model)
        total += step_loss * len(target)
        seen += len(target)
        if freq and step % freq == 0:
            log.log(level, "epoch %d [%d/%d] loss %.4f", epoch + 1, step, len(loader), step_loss)
    return total / max(1, seen), seen / max(1e-9, time.time() - start)


def _better(summary, loss, best):
    if summary["macro_f1"] != best["macro_f1"]:
        return summary["macro_f1"] > best["macro_f1"]
    return loss < best.get("loss", float("inf"))


def _setup(args):
    torch = torch_module()
    args.arch = canonical_arch(args.arch)
    if args.low_memory:
        args.workers = min(args.workers, 1)
        if args.accum_steps == 1 and args.batch_size > 8:
            args.accum_steps = low_memory_accum(args.batch_size)
    check_args(args)
    if args.seed is not None:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_resume(args)
    classes = run_classes(args, ckpt)
    samples = check_classes(args.data, classes, ("val",) if args.evaluate else ("train", "val"))
    if ckpt is not None:  # checked against this run before anything is written
        check_resume(args, ckpt, classes)
    check_model_dir(args, ckpt)
    mean, std = normalisation(args.arch)
    clahe = {"clip": float(args.clahe_clip), "tile": 8} if args.clahe else None
    preprocess = imagenet_preprocess(args.resolution, mean=mean, std=std, clahe=clahe)
    every = sum(samples.values(), [])
    check_images(every, lambda it: progress(it, "checking images", total=len(every)),
                 refuse=Preprocessor(preprocess, (3, args.resolution, args.resolution)).check)
    runtime = make_runtime(args.gpu, args.precision, args.channels_last)
    return runtime, classes, preprocess, ckpt


def _starting_model(args, num_classes, ckpt):
    """The network with its starting weights (ImageNet, a file, random or --resume's), where
    the weights came from, and the auto settings decided."""
    model = build_model(args.arch, num_classes)
    check_input_size(model, args.arch, args.resolution, num_classes)
    check_batch_of_one(model, args)
    if ckpt is None:
        init = dict(initialise(model, args.arch, args.pretrained, args.weights,
                               args.resolution), zero_init_residual=args.zero_init_residual)
        if args.zero_init_residual:
            log.info("--zero-init-residual: %d residual blocks start as the identity",
                     zero_init_residual(model))
    else:
        init = ckpt.get("init", {"source": "checkpoint"})
        saved = ckpt["state_dict"]  # what `oncolens evaluate` and the export score
        ckpt["state_dict"] = unscaled_state_dict(ckpt)  # model_best: the raw weights
        # -e scores the saved weights whatever --ema-epochs; training goes on from the live ones
        _load_resumed(args, model, saved if args.evaluate else
                      ckpt.get("train_state_dict", ckpt["state_dict"]))
    args.freeze_early = freeze_choice(args.freeze_early, init)
    if args.freeze_early and not args.evaluate:
        freeze_early_layers(model, args.resolution)
    settle_augmentation(args, init, ckpt)
    return model, init


def _load_resumed(args, model, state):
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # size mismatches: the checks above should have said why
        raise UsageError("--resume {}: its weights do not fit --arch {} ({})".format(
            args.resume, args.arch, str(exc).strip().splitlines()[-1].strip()))


def _head_and_body(args, model):
    """The classifier head's parameters (for --body-lr-ratio and --head-epochs) and the rest
    that --head-epochs holds still at first."""
    layer_wise = args.body_lr_ratio != 1.0
    head = head_parameters(model, args.resolution) if layer_wise or args.head_epochs else ()
    if layer_wise:
        log.info("layer-wise rates: the head (%d tensors) at the scheduled rate, the rest at "
                 "%g times it", len(head), args.body_lr_ratio)
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters()
            if p.requires_grad and id(p) not in head_ids] if args.head_epochs else []
    return head, body


def _resume_state(args, ckpt, optimizer, ema, runtime):
    """The best epoch so far, the epoch to start from and history.csv's rows up to it; the
    optimizer, weight average and fp16 GradScaler go on from the checkpoint's."""
    best = {"macro_f1": -1.0, "accuracy": 0.0, "epoch": -1, "loss": float("inf")}
    if ckpt is None:
        return best, args.start_epoch, []
    if ema is not None:
        ema.restore(ckpt["state_dict"], ckpt.get("ema", {}))
    if "optimizer" in ckpt and not args.evaluate:
        load_optimizer(args, optimizer, ckpt["optimizer"])
        if runtime.restore_scaler(ckpt.get("scaler")):
            log.info("--resume: the fp16 loss scale goes on from %g", runtime.scaler.get_scale())
    start_epoch = ckpt.get("epoch", args.start_epoch)
    history = read_history(os.path.dirname(args.resume) or ".")  # the checkpoint's own run
    rows = [r for r in history if int(r["epoch"]) <= start_epoch]
    return ckpt.get("best", best), start_epoch, rows


def run_training(args):
    """Train as the command line says; returns the best epoch's validation metrics."""
    resolve_epochs(args)
    runtime, classes, preprocess, ckpt = _setup(args)
    micro = args.batch_size // args.accum_steps
    model, init = _starting_model(args, len(classes), ckpt)
    if args.evaluate:  # writes nothing, reads nothing of train/
        return _evaluate_only(args, runtime.model(model), classes, preprocess, runtime, ckpt)
    prepare_model_dir(args)  # every check above has passed: only now is anything written
    adopt_best(args, ckpt)
    train_loader, val_loader, samples = make_loaders(args, classes, preprocess, micro)
    head, body = _head_and_body(args, model)
    model = runtime.model(model)
    optimizer = make_optimizer(args, model, head)  # splits the rates only when layer-wise
    loss_fn = make_loss(args, samples, len(classes), runtime.device)
    ema = None
    if args.ema_epochs > 0:
        ema = WeightAverage(model, args.ema_epochs, len(train_loader))
    best, start_epoch, rows = _resume_state(args, ckpt, optimizer, ema, runtime)
    runs = RunLog(ckpt, start_epoch, recipe_flags(args), runtime.describe())
    if ckpt is not None:  # model.json's start_epoch: where the run it continues began
        args.start_epoch = ckpt.get("start_epoch")  # None: the checkpoint does not say
    if rows:  # the resumed run's history, even if no epoch is left
        write_history(args.model_dir, rows)
    log.info("training %s on %s (%s), %s, batch %d%s", args.arch, plural(len(samples), "image"),
             ", ".join(classes), runtime.describe(), args.batch_size,
             " ({} x {})".format(args.accum_steps, micro) if args.accum_steps > 1 else "")
    bundle = _bundle_writer(args, classes, preprocess, (runtime, init, len(samples)), runs)
    try:
        best, seconds, stopped, last = _loop(args, (model, ema), optimizer, loss_fn, runtime,
                                       train_loader, val_loader, classes, preprocess, best,
                                       start_epoch, rows, init, body,
                                       ckpt.get("clock") if ckpt else None, runs, bundle)
    except RuntimeError as exc:
        if out_of_memory(exc):
            raise UsageError("out of memory at batch size {} and {} px: pass --low-memory, or a "
                             "smaller -b/--batch-size or --resolution".format(
                                 micro, args.resolution))
        raise
    bundle(best, seconds, stopped, last, _calibrate(args, classes, val_loader, runtime))
    plot_history(args.model_dir, read_history(args.model_dir))
    return dict(best, train_seconds=seconds, stopped=stopped)


def _bundle_writer(args, classes, preprocess, run, runs):
    """write(best, seconds, stopped, last, calibration): labels.txt and model.json for the
    run as far as epoch ``last``; ``run`` is (runtime, init, the number of training images)."""
    runtime, init, images = run

    def write(best, seconds, stopped, last, calibration=None):
        if calibration is None:  # an epoch that replaced model_best.pth.tar: not yet fitted
            calibration = {"temperature": 1.0, "fitted": False, "why": "the run had not "
                           "ended" if args.calibrate else "off (no --calibrate)"}
        training = dict(training_record(args, runtime, init, seconds, stopped),
                        train_images=images, last_epoch=last,
                        runs=runs.upto(last, seconds, stopped), calibration=calibration)
        write_bundle(args, classes, preprocess, best, training)
    return write


def _evaluate_only(args, model, classes, preprocess, runtime, ckpt):
    """-e/--evaluate: the --resume checkpoint's saved weights scored on val/."""
    loader = make_val_loader(args, classes, preprocess, args.batch_size // args.accum_steps)
    loss, summary, _, _ = evaluate(model, loader, runtime, len(classes))
    log.info("val loss %.4f accuracy %.4f macro-F1 %.4f", loss, summary["accuracy"],
             summary["macro_f1"])
    return dict(summary, epoch=ckpt.get("epoch", args.start_epoch), loss=loss)


def _calibrate(args, classes, val_loader, runtime):
    """With --calibrate, temperature scaling of model_best.pth.tar on val/
    (train/temperature.py); without it, or with --final-fit (nothing held out to fit it on),
    raw confidences, an earlier run's temperature taken back out."""
    best = os.path.join(args.model_dir, BEST)
    if val_loader is None:
        return remove_temperature(best, "--final-fit: no held-out split")
    if not args.calibrate:
        return remove_temperature(best, "off (no --calibrate)")
    return calibrate_checkpoint(best, args.arch, len(classes), val_loader, runtime)


def _head_phase(body, epoch, head_epochs, start_epoch):
    """--head-epochs: ``body``, the layers before the head, stays frozen for the first epochs."""
    if not body:  # --head-epochs 0
        return
    alone = epoch < head_epochs
    if epoch == start_epoch and alone:
        log.info("--head-epochs %d: the classifier head alone until epoch %d, then every "
                 "layer", head_epochs, head_epochs)
    elif epoch == head_epochs:
        log.info("epoch %d: every layer trains from here on", epoch + 1)
    for param in body:
        param.requires_grad_(not alone)


def _loop(args, models, optimizer, loss_fn, runtime, train_loader, val_loader, classes,
          preprocess, best, start_epoch, rows, init, body=(), clock=None, runs=None,
          bundle=None):
    model, ema = models
    seconds = trained_seconds(clock)
    judged = ema.model if ema is not None else model
    schedule = Schedule(args, len(train_loader), start_epoch, clock)
    stopped, last = "epochs", start_epoch
    # a resumed run's epochs since its best count towards --patience
    since_best = epochs_since_best(start_epoch, best.get("epoch"))
    used_up = used_up_stop(args, start_epoch, best, clock)
    if used_up:
        return best, seconds, used_up, last
    for epoch in range(start_epoch, args.epochs):
        last = epoch + 1
        t0 = time.time()
        _head_phase(body, epoch, args.head_epochs, start_epoch)
        train_loss, ips = _train_epoch(model, train_loader, optimizer, loss_fn, runtime,
                                       schedule, args, epoch, ema)
        if val_loader is None:  # --final-fit: nothing held out, the latest epoch is kept
            val_loss, summary, is_best = None, {"accuracy": None, "macro_f1": None}, True
        else:
            val_loss, summary, _, _ = evaluate(judged, val_loader, runtime, len(classes))
            is_best = _better(summary, val_loss, best)
        since_best = 0 if is_best else since_best + 1
        if is_best:
            best = {"macro_f1": summary["macro_f1"], "accuracy": summary["accuracy"],
                    "epoch": epoch + 1, "loss": val_loss}
        lr = optimizer.param_groups[0]["lr"]
        rows.append(history_row(epoch + 1, lr, train_loss, val_loss, summary,
                                 time.time() - t0, ips, is_best))
        log.info("epoch %d/%s  lr %.2e  train loss %.4f (%.1f img/s)  %s  %.0fs%s", epoch + 1,
                 "{:g} min".format(args.time_limit) if args.epochs_from_budget else args.epochs,
                 lr, train_loss, ips, val_text(val_loss, summary), time.time() - t0,
                 "  *best*" if is_best and val_loader is not None else "")
        room = schedule.epoch_done(time.time() - t0)
        clock = schedule.state()
        seconds = clock["train_seconds"]  # what the checkpoint says: a stop loses no more
        reason = stop_reason(args, since_best, room, epoch)
        state = {"epoch": epoch + 1, "arch": args.arch, "resolution": args.resolution,
                 "classes": classes, "num_classes": len(classes),
                 "state_dict": judged.state_dict(), "accuracy": summary["accuracy"],
                 "loss": val_loss, "optimizer": optimizer.state_dict(), "best": best,
                 "macro_f1": summary["macro_f1"], "preprocess": preprocess, "init": init,
                 "final_fit": val_loader is None, "body_lr_ratio": args.body_lr_ratio,
                 "trivial_augment": args.trivial_augment, "oncolens_version": __version__,
                 "clock": clock, "start_epoch": args.start_epoch,
                 "runs": runs.upto(epoch + 1, seconds, reason)}
        if runtime.scaler is not None:  # fp16 on CUDA: a resume goes on at its loss scale
            state["scaler"] = runtime.scaler_state()
        with signals_held():  # Ctrl-C or SIGTERM waits until the epoch is saved whole
            write_history(args.model_dir, rows)  # first: a resume keeps rows up to its epoch
            save_checkpoint(state, args.model_dir, is_best, (model, ema))
            if is_best and bundle is not None:  # model.json follows model_best.pth.tar
                bundle(best, seconds, None, epoch + 1)  # (stopped: null until the run ends)
        if reason in ("patience", "time-limit"):
            log_stop(args, reason, epoch + 1)
            stopped = reason
            break
    return best, seconds, stopped, last
