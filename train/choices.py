"""What ``oncolens train`` decides before it trains: flags that cannot go together (refused
before anything is written), the epoch count, and the ``auto`` settings that depend on where
the starting weights came from."""
import difflib
import logging
import os

from oncolens.appliance.archs import (EXPORT_OPSETS, arch_names, build_model, canonical_arch,
                                      load_checkpoint)
from oncolens.appliance.bundle import LABELS_TXT
from oncolens.appliance.errors import UsageError
from oncolens.train.data import discover_classes
from oncolens.train.flags import check_numbers
from oncolens.train.recipe import torch_module
from oncolens.train.weights import zero_init_residual

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 35  # jetson-inference's train.py
BUDGET_EPOCH_CAP = 100000  # --time-limit without --epochs: the clock ends the run


def resolve_epochs(args):
    """``--epochs`` left unset: 35 (jetson-inference's), or under ``--time-limit`` no count
    at all: the budget alone ends the run, and the cosine follows the clock to its end."""
    args.epochs_from_budget = args.epochs is None and bool(args.time_limit)
    if args.epochs is None:
        args.epochs = BUDGET_EPOCH_CAP if args.epochs_from_budget else DEFAULT_EPOCHS
    if args.epochs < 1:
        raise UsageError("--epochs: expected a positive number, got {}".format(args.epochs))


def torchvision_classifiers():
    """The image classifiers torchvision builds by name (list_models from 0.14 on; on the
    Nano's 0.11, the lower-case builder functions of torchvision.models)."""
    import torchvision
    models = torchvision.models
    if hasattr(models, "list_models"):
        return sorted(models.list_models(module=models))
    return sorted(n for n in dir(models) if n.islower() and not n.startswith("_") and
                  callable(getattr(models, n)) and not n.startswith("get_"))


def check_arch(arch):
    """--arch must name a network this project or torchvision builds (names are lower case)."""
    own = arch_names()
    if arch in own:
        return
    others = [n for n in torchvision_classifiers() if n not in own]
    if arch in others:
        return
    others = [n for n in others if not n.startswith("vit_")]  # refused: see check_input_size
    close = difflib.get_close_matches(arch.lower(), own + others, n=1, cutoff=0.6)
    raise UsageError("--arch {}: unknown architecture{}; expected {} or a torchvision "
                     "classifier ({})".format(arch, " (did you mean {}?)".format(close[0])
                                              if close else "", ", ".join(own),
                                              ", ".join(others)))


def warn_export_opset(arch):
    """A network that exports only at a later opset than the export's default trains as any
    other; one line says so at the start, with what is known of it on the Nano: TensorRT 8.2
    parses ONNX up to opset 13, and no real TensorRT has run in this project
    (docs/EXPORT.md), so whether its engine builds there is untested."""
    from oncolens.export.onnx_export import DEFAULT_OPSET, MAX_OPSET
    opset = EXPORT_OPSETS.get(canonical_arch(arch))
    if opset is None or opset <= DEFAULT_OPSET:
        return
    log.warning("--arch %s: its ONNX export needs --opset %d (the export's default, %d, cannot "
                "express it): export with 'oncolens export onnx --opset %d'. The Nano's "
                "TensorRT 8.2 parses ONNX up to opset %d, but a %s engine has not been built "
                "on a Nano (no real TensorRT has run in this project), so it is untested there",
                arch, opset, DEFAULT_OPSET, opset, MAX_OPSET, arch)


def check_input_size(model, arch, resolution, num_classes):
    """One forward pass of a blank image at --resolution, in eval mode (nothing changes): a
    network that cannot take that size, or gives something else than one row of class
    scores, is refused in one line, before training starts."""
    torch = torch_module()
    if any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules()):
        raise UsageError("--arch {}: its attention layers export to ONNX only at opset 14 or "
                         "later, and the Nano's TensorRT 8.2 parses up to 13, so it could not "
                         "run in the appliance: choose a convolutional network".format(arch))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, resolution, resolution))
    except Exception as exc:  # torch and torchvision say it in many ways (RuntimeError,
        # AssertionError, ValueError); the first line is the reason
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError("--arch {} cannot take --resolution {} ({}): give a --resolution it "
                         "accepts".format(arch, resolution, reason))
    finally:
        model.train(was_training)
    if not hasattr(out, "shape") or tuple(out.shape) != (1, num_classes):
        raise UsageError("--arch {}: its output is {}, not one row of {} class scores; oncolens "
                         "train does not support it".format(
                             arch, tuple(out.shape) if hasattr(out, "shape") else
                             type(out).__name__, num_classes))


def check_batch_of_one(model, args):
    """-b 1 (one image a step, or a micro-batch of one with --accum-steps): a network whose
    batch norm then sees one value per channel (ResNet-18's last block at 32 px) cannot
    train on it; refused in one line before anything is written, not a traceback."""
    if args.evaluate or args.batch_size // args.accum_steps != 1:
        return
    import copy
    torch = torch_module()
    trial = copy.deepcopy(model).train()  # the batch-norm statistics of ``model`` stay
    try:
        with torch.no_grad():
            trial(torch.zeros(1, 3, args.resolution, args.resolution))
    except ValueError as exc:
        raise UsageError("-b/--batch-size {} (micro-batches of 1 image): --arch {} at "
                         "--resolution {} cannot train on one image at a time ({}); give "
                         "micro-batches of 2 or more images, or a larger --resolution".format(
                             args.batch_size, args.arch, args.resolution,
                             str(exc).strip().splitlines()[0]))


def check_args(args):
    """Refuse flags out of range or that contradict each other, each with a one-line reason."""
    check_numbers(args)
    check_optimizer(args)
    check_arch(args.arch)
    if not args.evaluate:
        warn_export_opset(args.arch)
    if args.final_fit:
        _check_final_fit(args)
    if args.evaluate and not args.resume:
        raise UsageError("-e/--evaluate needs --resume CHECKPOINT: it scores that checkpoint "
                         "on val/")
    if args.zero_init_residual and args.resume:
        raise UsageError("--zero-init-residual: sets up the starting weights of a new run, but "
                         "--resume {} goes on from that checkpoint's own; leave it out".format(
                             args.resume))
    if args.weights and args.resume:
        raise UsageError("--weights {}: the starting weights of a new run, but --resume {} goes "
                         "on from that checkpoint's own; give one of the two".format(
                             args.weights, args.resume))
    if not args.body_lr_ratio > 0:
        raise UsageError("--body-lr-ratio: expected a positive fraction of --lr, got {}".format(
            args.body_lr_ratio))
    if args.head_epochs < 0:
        raise UsageError("--head-epochs: expected 0 or more, got {}".format(args.head_epochs))
    if args.trivial_augment == "on" and args.no_augment:
        raise UsageError("--trivial-augment: is augmentation, which --no-augment turns off; "
                         "give one of the two")
    if args.zero_init_residual:
        check_zero_init(args)


def check_optimizer(args):
    """jetson-inference's train.py lines are SGD lines (--lr 0.1 --momentum 0.9): under the
    default AdamW they would diverge, or --momentum would do nothing, so each gets a
    warning that names the flag for its recipe."""
    sgd = "jetson-inference's recipe is --optimizer sgd --lr 0.1 --momentum 0.9 --wd 1e-4"
    if args.optimizer != "sgd":
        if args.momentum is not None:
            log.warning("--momentum %s: SGD's momentum; --optimizer %s has none and ignores it "
                        "(%s)", args.momentum, args.optimizer, sgd)
        if args.lr is not None and args.lr > 0.01:
            log.warning("--lr %s with --optimizer %s: a rate this high usually diverges (its "
                        "default is 1e-3; %s)", args.lr, args.optimizer, sgd)
    if args.momentum is None:
        args.momentum = 0.9


def _check_final_fit(args):
    if args.patience:
        raise UsageError("--patience: stops on val/ macro-F1, but --final-fit trains on val/;"
                         " give --epochs or --time-limit instead")
    if args.evaluate:
        raise UsageError("--evaluate: scores val/, which --final-fit trains on; use "
                         "'oncolens evaluate' on a held-out split")
    if args.calibrate:
        raise UsageError("--calibrate: fits a temperature on val/, which --final-fit "
                         "trains on; leave one of the two out")


def load_resume(args):
    """The --resume checkpoint (None without one), read before the dataset so that -e can
    take its classes (``run_classes``); ``check_resume`` then checks it against this run."""
    return load_checkpoint(args.resume, "--resume") if args.resume else None


def run_classes(args, ckpt):
    """The run's classes: labels.txt, else train/'s folders. -e scores val/ only: on a
    dataset with neither, the checkpoint's classes, in its order, where val/'s class folders
    are those (else val/'s folders, which ``check_resume`` refuses, naming both)."""
    data = args.data
    if not args.evaluate or ckpt is None or not os.path.isdir(data) or \
            os.path.isfile(os.path.join(data, LABELS_TXT)) or \
            os.path.isdir(os.path.join(data, "train")):
        return discover_classes(data)
    found = discover_classes(data, "val")
    saved = ckpt.get("classes")
    if saved and sorted(saved) == sorted(found):
        log.info("%s: no labels.txt and no train/: the classes are the checkpoint's (%s)",
                 data, ", ".join(saved))
        return list(saved)
    return found


def check_resume(args, ckpt, classes=None):
    """--resume: the run goes on with the network, size, classes and mode it was made with."""
    where = "--resume {}".format(args.resume)
    arch = canonical_arch(ckpt["arch"])
    if arch != canonical_arch(args.arch):
        raise UsageError("{}: the checkpoint is a {} but --arch is {}; resume with --arch {}"
                         .format(where, arch, args.arch, arch))
    if ckpt.get("resolution") is not None and int(ckpt["resolution"]) != args.resolution:
        raise UsageError("{}: the checkpoint was trained at --resolution {} but this run asks "
                         "for {}; resume with --resolution {}".format(
                             where, ckpt["resolution"], args.resolution, ckpt["resolution"]))
    _check_resume_clahe(where, ckpt, args)
    if classes is not None:
        _check_resume_classes(where, ckpt, list(classes), args.data)
    if args.start_epoch and not args.evaluate and ckpt.get("epoch") is not None:
        log.warning("%s: --start-epoch %d is left aside: the run goes on from the checkpoint's "
                    "epoch %s, as train.py's --resume does", where, args.start_epoch,
                    ckpt["epoch"])
    if not args.evaluate and int(ckpt.get("epoch", 0)) >= args.epochs:
        log.info("%s: the checkpoint is at epoch %s and --epochs is %d: no epoch left to "
                 "train; only the bundle (and --calibrate) is redone", where, ckpt.get("epoch"),
                 args.epochs)
    if args.evaluate and ckpt.get("final_fit"):
        raise UsageError("{}: -e/--evaluate scores val/, which that --final-fit run trained "
                         "on; use 'oncolens evaluate' on a held-out split".format(where))
    if bool(ckpt.get("final_fit")) != args.final_fit:
        raise UsageError("{}: that run was {}made with --final-fit; resume it the same "
                         "way".format(where, "" if ckpt.get("final_fit") else "not "))
    saved = _saved_optimizer(ckpt)
    if saved and saved != args.optimizer and not args.evaluate:
        raise UsageError("{}: that run was made with --optimizer {}, whose state it holds; "
                         "resume it with --optimizer {}".format(where, saved, saved))
    if float(ckpt.get("body_lr_ratio", 1.0)) != args.body_lr_ratio:
        raise UsageError("{}: that run was made with --body-lr-ratio {:g}; resume it "
                         "the same way".format(where, float(ckpt.get("body_lr_ratio", 1.0))))


def _saved_optimizer(ckpt):
    """adamw or sgd, from the parameter groups of the checkpoint's optimizer state (which
    does not name it); None where it does not say."""
    saved = ckpt.get("optimizer")
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not groups:
        return None
    if "betas" in groups[0]:
        return "adamw"
    return "sgd" if "momentum" in groups[0] else None


def _clahe_flags(clahe):
    return "with --clahe --clahe-clip {:g}".format(float(clahe["clip"])) if clahe else \
        "without --clahe"


def _check_resume_clahe(where, ckpt, args):
    """CLAHE is part of the model's preprocessing (model.json's ``preprocess.clahe``): a
    --resume or -e without the checkpoint's own would train on, or score, other images than
    the model was made for, and the bundle would drop the step it was trained with."""
    recorded = ckpt.get("preprocess")
    if not isinstance(recorded, dict):  # a jetson-inference checkpoint: no CLAHE
        return
    old = recorded.get("clahe") or None
    new = {"clip": float(args.clahe_clip), "tile": 8} if args.clahe else None
    if (old is None) != (new is None) or old and (
            float(old.get("clip", 0)) != new["clip"] or int(old.get("tile", 8)) != 8):
        raise UsageError("{}: the checkpoint was trained {} (its preprocessing) but this run "
                         "is {}; resume {}".format(where, _clahe_flags(old),
                                                   _clahe_flags(new), _clahe_flags(old)))


def _check_resume_classes(where, ckpt, classes, data):
    old = ckpt.get("classes")
    if old is None:  # a jetson-inference checkpoint may record only the count
        count = ckpt.get("num_classes")
        if count is not None and int(count) != len(classes):
            raise UsageError("{}: the checkpoint has {} classes but {} has {} ({})".format(
                where, count, data, len(classes), ", ".join(classes)))
        return
    old = list(old)
    if old == classes:
        return
    if sorted(old) == sorted(classes):
        raise UsageError("{}: the checkpoint's classes are in the order {} but {} lists them as "
                         "{}; resume on a dataset whose labels.txt keeps the checkpoint's order"
                         .format(where, ", ".join(old), data, ", ".join(classes)))
    raise UsageError("{}: the checkpoint was trained on classes {} but {} has {}; resume on "
                     "the same classes or train a new model".format(
                         where, ", ".join(old), data, ", ".join(classes)))


def check_zero_init(args):
    """--zero-init-residual: only from random weights, only for networks with residual blocks
    (checked before the model directory is made)."""
    if args.weights or args.pretrained is not False:
        raise UsageError("--zero-init-residual: sets up random weights, but this run starts "
                         "from {}".format("--weights: leave it out" if args.weights else
                                          "ImageNet weights (--pretrained is on by default): "
                                          "add --no-pretrained"))
    with torch_module().random.fork_rng(devices=[]):  # leave the seeded stream untouched
        blocks = zero_init_residual(build_model(args.arch, 2))
    if not blocks:
        raise UsageError("--zero-init-residual: --arch {} has no ResNet residual blocks "
                         "(expected resnet18, resnet34, resnet50 or another torchvision "
                         "ResNet)".format(args.arch))


def freeze_choice(option, init):
    """on / off / auto, where auto means: the weights came from a pretrained source (a
    fine-tune). --freeze-early uses it as it is; --trivial-augment too, unless --no-augment."""
    if option == "auto":
        return init.get("source") in ("imagenet", "file")
    return option == "on"


def trivial_choice(option, init, no_augment, ckpt=None):
    """--trivial-augment left at auto: on for a fine-tune from pretrained weights (it led on
    BUSI val for EfficientNet-Lite0, docs/RESULTS.md), off from random weights (it did not).

    On --resume, auto keeps what the run was started with; a checkpoint that does not record
    it predates the auto setting (commit 807e5dd), when it was off unless asked for."""
    if option == "auto" and no_augment:
        return False
    if option == "auto" and ckpt is not None:
        return bool(ckpt.get("trivial_augment", False))
    return freeze_choice(option, init)


def settle_augmentation(args, init, ckpt):
    """Turn ``args.trivial_augment`` from on / off / auto into a yes or no, and say why."""
    chosen = trivial_choice(args.trivial_augment, init, args.no_augment, ckpt)
    if args.trivial_augment == "auto" and not args.evaluate:
        if args.no_augment:
            why = "--no-augment"
        elif ckpt is not None:
            why = "as the resumed run was trained"
        else:
            why = "a fine-tune from pretrained weights" if chosen else "random weights"
        log.info("--trivial-augment auto: %s (%s)", "on" if chosen else "off", why)
    args.trivial_augment = chosen
