"""``oncolens train``: jetson-inference's train.py command line, with a better default recipe.

    oncolens train --model-dir=models/busi-lite0 --arch efficientnet_lite0 data/busi
"""
import logging

from oncolens.appliance.cliutil import (OneLineParser, cli_entry, normalize_flags, setup_logging,
                                        sigterm_as_interrupt)
from oncolens.appliance.errors import plural

log = logging.getLogger("oncolens.train")

DIFFERS = ("Defaults that differ from jetson-inference's train.py (chosen for small, unbalanced "
           "medical sets on a CPU): AdamW instead of SGD, --lr 1e-3 instead of 0.1, --wd 0.05 "
           "instead of 1e-4, -b 32 instead of 8, cosine schedule with warm-up instead of /10 "
           "every 30 epochs, class-weighted loss, augmentation, best epoch by validation "
           "macro-F1 instead of accuracy, the CPU unless --gpu N is given (train.py: GPU 0), "
           "the loss every 10 batches at --log-level debug unless -p is given (train.py "
           "prints it every 10). As in train.py: --pretrained on, --epochs 35, --resolution "
           "224, -j 2, --momentum 0.9 (with --optimizer sgd). --optimizer sgd --lr 0.1 --wd 1e-4 "
           "-b 8 --schedule step --warmup-epochs 0 --class-weights none --label-smoothing 0 "
           "--ema-epochs 0 --freeze-early off --no-trivial-augment --crop-scale 0.08 "
           "--colour-jitter 0 --orientation fixed gives jetson-inference's recipe back (the "
           "best epoch still by macro-F1).")


def _jetson_flags(p):
    p.add_argument("data", help="dataset folder with train/ and val/ class folders")
    p.add_argument("--model-dir", default="models", help="where to write the model (models)")
    p.add_argument("-a", "--arch", default="resnet18",
                   help="resnet18 (default), efficientnet_lite0, simple-cnn or a torchvision "
                        "image classifier name (lower case; one that takes --resolution)")
    p.add_argument("--resolution", type=int, default=224, help="input size in pixels (224)")
    p.add_argument("-j", "--workers", type=int, default=2, help="data loading workers (2)")
    p.add_argument("--epochs", type=int, default=None,
                   help="number of epochs (35; with --time-limit and no --epochs, as many as "
                        "the time allows)")
    p.add_argument("--start-epoch", type=int, default=0,
                   help="first epoch number (0); with --resume, left aside (the checkpoint's "
                        "epoch)")
    p.add_argument("-b", "--batch-size", type=int, default=32,
                   help="mini-batch size (32; jetson-inference: 8)")
    p.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=1e-3,
                   help="peak learning rate (1e-3; jetson-inference: 0.1 with SGD)")
    p.add_argument("--momentum", type=float, default=None,
                   help="SGD momentum (0.9; with AdamW, ignored with a warning)")
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=0.05,
                   help="weight decay, not applied to biases and norms (0.05; "
                        "jetson-inference: 1e-4)")
    p.add_argument("-p", "--print-freq", type=int, default=None,
                   help="log the loss every N batches of -b images, as train.py counts "
                        "them (one split by --accum-steps still counts once; 0: never); "
                        "without -p, every 10 batches at --log-level debug (jetson-inference: "
                        "10, always shown)")
    p.add_argument("--resume", default="", help="checkpoint to resume from (restores the "
                                                "epoch, optimizer and best metric)")
    p.add_argument("-e", "--evaluate", action="store_true",
                   help="only evaluate the --resume checkpoint on val/")
    p.add_argument("--pretrained", dest="pretrained", action="store_true", default=None,
                   help="start from ImageNet weights (default: on, as jetson-inference; "
                        "torchvision's cache or "
                        "download, offline for efficientnet_lite0; when left at its default "
                        "and the weights cannot be had, a warning and random weights)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="start from random weights")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for a repeatable run (a --resume of it trains on as the "
                        "run left alone would)")
    p.add_argument("--gpu", type=int, default=None,
                   help="GPU id to use (default: none, the CPU; jetson-inference: 0)")


def _recipe_flags(p):
    p.add_argument("--weights", default=None,
                   help="start from this local state dict (or checkpoint) instead of ImageNet")
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"),
                   help="optimizer (adamw)")
    p.add_argument("--schedule", default="cosine", choices=("cosine", "step"),
                   help="cosine with warm-up (default) or jetson-inference's /10 every 30 epochs")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up (1)")
    p.add_argument("--min-lr-ratio", type=float, default=0.01,
                   help="cosine floor as a fraction of --lr (0.01)")
    p.add_argument("--class-weights", default="balanced", choices=("balanced", "none"),
                   help="loss weight per class, inverse to its frequency (balanced)")
    p.add_argument("--sampler", default="shuffle", choices=("shuffle", "weighted"),
                   help="'weighted' draws classes equally often (then the loss is unweighted)")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="(0.1)")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after N epochs without a better epoch: higher val macro-F1, "
                        "or the same with lower val loss (0: never)")
    p.add_argument("--time-limit", type=float, default=0.0, metavar="MINUTES",
                   help="training budget in minutes; the cosine schedule is fitted to it "
                        "(0: none)")
    p.add_argument("--ema-epochs", type=float, default=3.0, metavar="N",
                   help="validate and save a moving average of the weights over about the "
                        "last N epochs (3; 0: the raw weights, as jetson-inference does)")
    p.add_argument("--body-lr-ratio", type=float, default=1.0, metavar="R",
                   help="the layers before the classifier head learn at R times the rate "
                        "(layer-wise rates for fine-tuning; 1: one rate for all)")
    p.add_argument("--head-epochs", type=int, default=0, metavar="N",
                   help="train the classifier head alone for the first N epochs, the rest "
                        "frozen, then every layer (0: every layer from the start)")
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="blend pairs of training images with a Beta(ALPHA, ALPHA) weight "
                        "(0: off)")
    p.add_argument("--zero-init-residual", action="store_true",
                   help="from random weights, start the last batch norm of every residual "
                        "block at zero, so each block begins as the identity (ResNet "
                        "family only)")
    p.add_argument("--final-fit", action="store_true",
                   help="once the recipe is chosen on val/: train on train/ and val/ together "
                        "and keep the last epoch (no epoch is chosen, no val figures; the "
                        "length comes from --epochs or --time-limit)")
    p.add_argument("--freeze-early", default="auto", choices=("auto", "on", "off"),
                   help="freeze the layers at 1/2 and 1/4 of the input resolution (auto: when "
                        "starting from pretrained weights; 1.6x faster epochs on a CPU)")
    p.add_argument("--calibrate", action="store_true",
                   help="temperature scaling: once training ends, fit one temperature on val/ "
                        "and fold it into the last layer of model_best.pth.tar, so confidences "
                        "follow val/ accuracy (no prediction changes class). Off by default: "
                        "val/ also chose the epoch and overstates accuracy, and on BUSI the "
                        "fitted temperature made EfficientNet-Lite0 overconfident on test "
                        "(docs/RESULTS.md)")


def _augment_flags(p):
    p.add_argument("--crop-scale", type=float, default=0.35,
                   help="smallest random crop, as a fraction of the image area (0.35)")
    p.add_argument("--colour-jitter", "--color-jitter", dest="colour_jitter", type=float,
                   default=0.2, help="brightness/contrast strength (0.2; 0 for none)")
    p.add_argument("--stain-jitter", type=float, nargs="?", const=0.05, default=0.0,
                   help="perturb haematoxylin-eosin stain amounts (stained histology; 0.05 "
                        "when given without a value)")
    p.add_argument("--orientation", default="auto", choices=("auto", "fixed", "free"),
                   help="fixed: only left-right flips (ultrasound, X-ray: up is the skin side); "
                        "free: flips both ways and 90-degree turns (microscopy); auto: fixed "
                        "when the training images are greyscale, else free")
    p.add_argument("--no-rot90", action="store_true", help="no 90-degree rotations")
    p.add_argument("--trivial-augment", dest="trivial_augment", action="store_const",
                   const="on", default="auto",
                   help="TrivialAugment: also one operation per image, drawn at random at a "
                        "random strength (rotation up to 30 degrees, shear, shift, brightness, "
                        "contrast, sharpness, gamma, autocontrast, equalise, posterise); "
                        "default: on when starting from pretrained weights, off from random "
                        "weights")
    p.add_argument("--no-trivial-augment", dest="trivial_augment", action="store_const",
                   const="off", help="no TrivialAugment, whatever the weights")
    p.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    p.add_argument("--clahe", action="store_true",
                   help="contrast enhancement (CLAHE), recorded in model.json so the appliance "
                        "applies it too")
    p.add_argument("--clahe-clip", type=float, default=2.0, help="CLAHE clip limit (2.0)")


def _runtime_flags(p):
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="of the training steps (validation runs in fp32, as the exported "
                        "model does); auto: bf16 autocast on CPUs with AVX512-BF16/AMX, fp16 "
                        "AMP on a GPU, else fp32")
    p.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                   help="channels_last memory format (auto: on)")
    p.add_argument("--low-memory", action="store_true",
                   help="for a 4 GB Jetson Nano: micro-batches of 8 with gradient accumulation, "
                        "one worker, no image cache")
    p.add_argument("--accum-steps", type=int, default=1,
                   help="split each batch into N accumulated micro-batches (1)")
    p.add_argument("--cache", default="auto", choices=("auto", "on", "off"),
                   help="keep decoded training images in memory (auto: when under 2 GB)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing model (or exported bundle) in --model-dir, and "
                        "remove its ONNX, engines, variants/, eval-*/ and selftest/ reports")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")


def build_parser():
    p = OneLineParser(
        prog="oncolens train",
        description="Train a classifier on DATA/train and DATA/val class folders; writes "
                    "checkpoint.pth.tar, model_best.pth.tar, labels.txt, model.json, "
                    "history.csv and curves.png to --model-dir. Flags as jetson-inference's "
                    "train.py, plus the recipe options below.",
        epilog=DIFFERS)
    _jetson_flags(p)
    _recipe_flags(p)
    _augment_flags(p)
    _runtime_flags(p)
    return p


@cli_entry("oncolens train")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    from oncolens.appliance.errors import ImageReadError
    from oncolens.train.precheck import worker_error_line
    from oncolens.train.trainer import run_training
    try:  # SIGTERM (systemd, timeout, kill) stops as Ctrl-C does: no half-written file left
        with sigterm_as_interrupt():
            result = run_training(args)
    except ImageReadError as exc:  # from a data-loader worker: its traceback, then the error
        raise ImageReadError(worker_error_line(exc))
    if args.final_fit:
        print("trained on train/ and val/ for {} (--final-fit: no val figures; evaluate on "
              "a held-out split); model in {}".format(plural(result["epoch"], "epoch"),
                                                      args.model_dir))
    elif args.evaluate:  # -e: nothing was written
        print("val accuracy {:.4f}, macro-F1 {:.4f} of {} (epoch {})".format(
            result["accuracy"], result["macro_f1"], args.resume, result["epoch"]))
    else:
        print("best val accuracy {:.4f}, macro-F1 {:.4f} at epoch {}; model in {}".format(
            result["accuracy"], result["macro_f1"], result["epoch"], args.model_dir))
    return 0
