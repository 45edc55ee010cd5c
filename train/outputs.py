"""What a training run writes into ``--model-dir``: the checkpoints (jetson-inference's
``checkpoint.pth.tar`` and ``model_best.pth.tar``), ``labels.txt`` and ``model.json``."""
import logging
import os
import shutil

from oncolens import __version__
from oncolens.appliance.bundle import (MODEL_JSON, LABELS_TXT, new_model_info, sha256_file,
                                       write_labels, write_model_info)
from oncolens.appliance.errors import UsageError, plural
from oncolens.appliance.outpaths import check_output_dir, inside, replace_file as _replace
from oncolens.train.modeldir import (BEST, CHECKPOINT, derived_artefacts, model_files,
                                     recorded_info, remove_derived)
from oncolens.train.history import HISTORY_CSV, read_history
from oncolens.train.recipe import torch_module
from oncolens.train.runs import epochs_since_best, resumed_stop, trained_seconds
from oncolens.train.synth import dataset_provenance

log = logging.getLogger(__name__)


def _same_folder(a, b):
    return os.path.realpath(a or ".") == os.path.realpath(b)


def check_model_dir(args, ckpt=None):
    """Refuse a --model-dir training may not write into (checked before the images are
    read). A folder that holds model files (a trained model, an exported bundle) is only
    written into by a --resume of its own checkpoint, or with --overwrite; -e/--evaluate
    writes nothing, so any --model-dir will do. With the resumed ``ckpt``, a --resume that
    goes back to an earlier epoch of the folder's own run is refused too (``_check_rewind``)."""
    if args.evaluate:
        return
    if ckpt is not None:
        _check_rewind(args, ckpt)
        _check_best_left(args, ckpt)
    check_output_dir(args.model_dir, "--model-dir")
    _check_outside_splits(args.model_dir, args.data)
    found = model_files(args.model_dir)
    own = bool(args.resume) and _same_folder(os.path.dirname(args.resume), args.model_dir)
    if found and not (args.overwrite or own):
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        if args.resume:
            raise UsageError("--model-dir {} holds another model ({}) than --resume {}: pass "
                             "--overwrite to replace it, or resume into {}".format(
                                 args.model_dir, shown, args.resume,
                                 os.path.dirname(args.resume) or "."))
        raise UsageError("--model-dir {} already holds model files ({}): pass --overwrite to "
                         "replace them, --resume to continue, or give another folder".format(
                             args.model_dir, shown))


def _latest_epoch(model_dir):
    """The last epoch the folder's run trained: history.csv's last row, else (a folder
    without one, as jetson-inference's) its checkpoint.pth.tar's epoch."""
    rows = read_history(model_dir)
    if rows:
        return max(int(r["epoch"]) for r in rows)
    from oncolens.appliance.archs import load_checkpoint
    return int(load_checkpoint(os.path.join(model_dir, CHECKPOINT)).get("epoch") or 0)


def _check_rewind(args, ckpt):
    """--resume of an earlier checkpoint of --model-dir's own run (its model_best.pth.tar)
    would replace the later checkpoint.pth.tar and drop history.csv's later epochs, with
    no word: refused without --overwrite, naming the epochs that would be lost."""
    latest = os.path.join(args.model_dir, CHECKPOINT)
    if args.overwrite or not _same_folder(os.path.dirname(args.resume), args.model_dir) or \
            not os.path.isfile(latest) or os.path.samefile(args.resume, latest):
        return
    at, last = int(ckpt.get("epoch") or 0), _latest_epoch(args.model_dir)
    if last <= at:
        return
    lost = "epoch {}".format(last) if last == at + 1 else "epochs {}-{}".format(at + 1, last)
    raise UsageError("--resume {} goes back to epoch {} of the run in {}, which trained to "
                     "epoch {}: going on from there would replace its {} and drop {} from its "
                     "{}; pass --overwrite to do that, resume {} to go on from epoch {}, or "
                     "give another --model-dir to branch off".format(
                         args.resume, at, args.model_dir, last, CHECKPOINT, lost, HISTORY_CSV,
                         latest, last))


def _check_outside_splits(model_dir, data):
    """A --model-dir in DATA/train, val or test would have its files read as images
    (curves.png in a class folder, or a folder of its own taken for a new class); DATA itself
    would get (or lose to --overwrite) the labels.txt that lists the dataset's classes."""
    real = os.path.realpath(model_dir)
    if real == os.path.realpath(data):
        raise UsageError("--model-dir {} is the dataset folder itself: the model's labels.txt "
                         "would become (or replace) the dataset's list of classes; give a "
                         "folder of its own, such as {}".format(
                             model_dir, os.path.join(data, "models")))
    for split in ("train", "val", "test"):
        folder = os.path.join(data, split)
        there = os.path.realpath(folder)
        if real == there or inside(real, there):
            raise UsageError("--model-dir {} is inside the dataset's {} (its curves.png "
                             "would be read as an image, or the folder as a class): give a "
                             "folder outside the train/, val/ and test/ of {}".format(
                                 model_dir, folder, data))


def prepare_model_dir(args):
    """Check --model-dir (``check_model_dir``) and make it, clearing what --overwrite
    replaces; -e/--evaluate writes nothing."""
    check_model_dir(args)
    if args.evaluate:
        return
    if args.overwrite:
        remove_derived(args.model_dir)
    else:
        _warn_stale_exports(args.model_dir)
    if not os.path.isdir(args.model_dir):
        os.makedirs(args.model_dir)


def adopt_best(args, ckpt):
    """--resume of a checkpoint from another folder: that run's model_best.pth.tar (its best
    epoch so far) comes along into --model-dir. Either way, the model_best.pth.tar in
    --model-dir is then the one the checkpoint's best epoch says (``_match_best``): where
    none comes along, the checkpoint itself when its own epoch is its best, else the resumed
    run chooses its best epoch afresh."""
    source = os.path.dirname(args.resume) or "."
    if ckpt is None or args.evaluate:
        return
    if not _same_folder(source, args.model_dir):
        shutil.copyfile(args.resume, os.path.join(args.model_dir, CHECKPOINT))  # where it is
        best = os.path.join(args.model_dir, BEST)
        if os.path.isfile(os.path.join(source, BEST)):
            shutil.copyfile(os.path.join(source, BEST), best)
        elif os.path.exists(best):
            os.remove(best)
    _match_best(args, ckpt)


def _best_plan(resume, ckpt, path):
    """What becomes of the model_best.pth.tar at ``path`` (where --resume ``ckpt``'s run has
    it) for a resumed run: ("keep", {}), ("copy" from the checkpoint, which holds its best
    epoch, model_best's dictionary), ("believe" the model_best of another epoch, its
    dictionary) or ("afresh", its dictionary): none fits, the run chooses its best anew."""
    from oncolens.appliance.archs import load_checkpoint
    best = ckpt.get("best") or {}
    if int(best.get("epoch") or -1) < 1:  # no best epoch chosen yet (or jetson-inference's)
        return ("keep" if os.path.isfile(path) else "afresh"), {}
    if os.path.isfile(path) and os.path.samefile(path, resume):
        return "keep", {}
    on_disk = load_checkpoint(path) if os.path.isfile(path) else {}
    if on_disk.get("epoch") == best["epoch"]:
        return "keep", on_disk
    if best["epoch"] == ckpt.get("epoch"):
        return "copy", on_disk
    if on_disk.get("epoch") and int(on_disk["epoch"]) <= int(ckpt.get("epoch") or 0):
        return "believe", on_disk
    return "afresh", on_disk


def _match_best(args, ckpt):
    """save_checkpoint replaces checkpoint.pth.tar, then model_best.pth.tar: a run stopped
    between the two (Ctrl-C, a crash) left a checkpoint whose own epoch is its best beside
    the model_best of an earlier best epoch (or none). The checkpoint holds that epoch's
    weights, so the copy is finished here; a model_best of another epoch than the
    checkpoint's best (not one this run can have left) is said, and its own epoch and
    figures are believed."""
    path = os.path.join(args.model_dir, BEST)
    plan, on_disk = _best_plan(args.resume, ckpt, path)
    if plan == "keep":
        return
    best = ckpt.get("best") or {}
    held = "holds epoch {}".format(on_disk["epoch"]) if on_disk else "is missing"
    shown = "--resume {}: {} {}, not epoch {}, the checkpoint's best".format(
        args.resume, BEST, held, best.get("epoch"))
    if plan == "copy":
        log.warning("%s (a run stopped between writing the two, or a checkpoint resumed "
                    "without it): copied from the checkpoint", shown)
        _replace(path, lambda tmp: shutil.copyfile(args.resume, tmp))
    elif plan == "believe":
        log.warning("%s: going on with epoch %d as the best so far", shown, on_disk["epoch"])
        ckpt["best"] = {k: on_disk.get(k) for k in ("macro_f1", "accuracy", "epoch", "loss")}
    elif best:
        log.warning("%s: this run chooses its best epoch afresh", shown)
        ckpt.pop("best", None)


def _check_best_left(args, ckpt):
    """A --resume with no epoch left to train (by --epochs, or a --time-limit or --patience
    its checkpoint had used up: runs.resumed_stop) writes only the bundle, from a model_best:
    where none comes along and the checkpoint cannot stand in for it (its best epoch is an
    earlier one, or it names none), refused before anything is written."""
    best = (ckpt.get("best") or {}).get("epoch")
    reason = resumed_stop(args, ckpt.get("epoch"), best, ckpt.get("clock"))
    if not reason:
        return
    source = os.path.dirname(args.resume) or "."
    path = os.path.join(source, BEST)
    plan, on_disk = _best_plan(args.resume, ckpt, path)
    if plan != "afresh":
        return
    held = "holds epoch {}, later than the checkpoint's".format(on_disk["epoch"]) if \
        on_disk else "is missing"
    why = "its best epoch was {}".format(best) if best else "it names no best epoch"
    raise UsageError("--resume {}: {} {}, and the checkpoint cannot stand in for it ({}); {}: "
                     "pass a larger --{} to train on and choose a best epoch afresh, or put "
                     "that run's {} back".format(args.resume, path, held, why,
                                                 _nothing_left(args, ckpt, reason), reason,
                                                 BEST))


def _nothing_left(args, ckpt, reason):
    """Why a resumed checkpoint has no epoch left, for ``reason`` (runs.resumed_stop's)."""
    epoch = ckpt.get("epoch")
    if reason == "epochs":
        return "it is at epoch {}, so --epochs {} leaves nothing to train".format(
            epoch, args.epochs)
    if reason == "patience":
        return "it is at epoch {}, {} after its best, so --patience {} leaves nothing to " \
            "train".format(epoch, plural(epochs_since_best(epoch, ckpt["best"]["epoch"]),
                                         "epoch"), args.patience)
    return "it has trained {:.1f} s, so --time-limit {:g} min leaves no room for another " \
        "epoch".format(trained_seconds(ckpt.get("clock")), args.time_limit)


def _warn_stale_exports(model_dir):
    files = derived_artefacts(model_dir)[0] if os.path.isdir(model_dir) else []
    onnx = [n for n in files if n.endswith(".onnx")]  # with an --output in a sub-folder
    if onnx:
        log.warning("%s holds %s, exported from the model before this run: re-export it once "
                    "training ends ('oncolens evaluate' uses the checkpoint until then)",
                    model_dir, ", ".join(onnx))


def save_checkpoint(state, model_dir, is_best, models=(None, None)):
    """checkpoint.pth.tar (and model_best.pth.tar when best): ``state_dict`` holds the weights
    that were validated (the weight average when on); the live training weights and the
    average's counters ride along for --resume."""
    torch = torch_module()
    model, ema = models
    if ema is not None:
        state = dict(state, train_state_dict=model.state_dict(), ema=ema.state())
    path = os.path.join(model_dir, CHECKPOINT)
    _replace(path, lambda tmp: torch.save(state, tmp))
    if is_best:
        _replace(os.path.join(model_dir, BEST), lambda tmp: shutil.copyfile(path, tmp))


RECIPE = ("epochs", "batch_size", "lr", "optimizer", "schedule", "warmup_epochs",
          "min_lr_ratio", "weight_decay", "label_smoothing", "class_weights", "sampler",
          "crop_scale", "colour_jitter", "stain_jitter", "orientation", "no_rot90", "no_augment",
          "seed", "time_limit", "patience", "accum_steps", "low_memory", "mixup", "ema_epochs",
          "freeze_early", "final_fit", "body_lr_ratio", "head_epochs", "trivial_augment")


def recipe_flags(args):
    """This run's recipe, as model.json's ``training`` (and each of its ``runs``) records it."""
    record = {k: getattr(args, k) for k in RECIPE}
    record["momentum"] = args.momentum if args.optimizer == "sgd" else None  # AdamW: none
    if getattr(args, "epochs_from_budget", False):
        record["epochs"] = None  # as many as --time-limit allowed (see "stopped")
    return record


def training_record(args, runtime, init, seconds, stopped):
    """The ``training`` block of model.json: the (last run's) recipe and how it went."""
    record = dict(recipe_flags(args), start_epoch=args.start_epoch)
    # how the starting weights were made, carried through --resume (None: not recorded)
    record["zero_init_residual"] = init.get("zero_init_residual")
    record.update({"best_epoch": None, "init": init, "runtime": runtime.describe(),
                   "train_seconds": round(seconds, 1), "stopped": stopped,
                   "oncolens_version": __version__})
    return record


def write_bundle(args, classes, preprocess, best, training):
    """labels.txt and model.json beside the checkpoints."""
    write_labels(os.path.join(args.model_dir, LABELS_TXT), classes)
    training = dict(training, best_epoch=best["epoch"])
    if training.get("final_fit"):  # val/ was trained on: no validation figures to give
        scores = {"val": None, "fit_on": ["train", "val"]}
    else:
        scores = {"val": {"accuracy": best["accuracy"], "macro_f1": best["macro_f1"],
                          "loss": best.get("loss")}}
    sha = sha256_file(os.path.join(args.model_dir, BEST))
    info = new_model_info(
        args.arch, classes, args.resolution, preprocess,
        checkpoint={"file": BEST, "sha256": sha},
        training=training,
        metrics=scores,
        provenance=dataset_provenance(args.data))
    info.update(_exports_of(args.model_dir, sha))
    write_model_info(os.path.join(args.model_dir, MODEL_JSON), info)
    return info


def _exports_of(model_dir, sha):
    """The ONNX and engine records of the old model.json, kept when they were exported from
    this very model_best (a resume that found no better epoch): they are not stale."""
    old = recorded_info(model_dir)
    onnx = old.get("onnx")
    if not isinstance(onnx, dict) or onnx.get("checkpoint_sha256") != sha or \
            not os.path.isfile(os.path.join(model_dir, onnx.get("file") or "")):
        return {}
    return {"onnx": onnx, "engines": old.get("engines") or []}
