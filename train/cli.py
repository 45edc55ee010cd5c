"""``oncolens train``: jetson-inference's train.py command line.

    oncolens train --model-dir=models/cat_dog data/cat_dog
"""
import argparse
import logging

from oncolens.appliance.cliutil import cli_entry, normalize_flags, setup_logging

log = logging.getLogger("oncolens.train")


def build_parser():
    p = argparse.ArgumentParser(
        prog="oncolens train",
        description="Train a classifier on DATA/train and DATA/val class folders; writes "
                    "checkpoint.pth.tar, model_best.pth.tar, labels.txt and model.json to "
                    "--model-dir. Flags as jetson-inference's train.py.")
    p.add_argument("data", help="dataset folder with train/ and val/ class folders")
    p.add_argument("--model-dir", default="models", help="where to write the model (models)")
    p.add_argument("-a", "--arch", default="resnet18", help="network architecture (resnet18)")
    p.add_argument("--resolution", type=int, default=224, help="input size in pixels (224)")
    p.add_argument("-j", "--workers", type=int, default=2, help="data loading workers (2)")
    p.add_argument("--epochs", type=int, default=35, help="number of epochs (35)")
    p.add_argument("--start-epoch", type=int, default=0, help="first epoch number (0)")
    p.add_argument("-b", "--batch-size", type=int, default=8, help="mini-batch size (8)")
    p.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=0.1,
                   help="initial learning rate (0.1)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (0.9)")
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=1e-4,
                   help="weight decay (1e-4)")
    p.add_argument("-p", "--print-freq", type=int, default=10, help="log every N batches (10)")
    p.add_argument("--resume", default="", help="checkpoint to resume from")
    p.add_argument("-e", "--evaluate", action="store_true",
                   help="only evaluate the --resume checkpoint on val/")
    p.add_argument("--pretrained", dest="pretrained", action="store_true", default=False,
                   help="start from ImageNet weights (not yet available offline)")
    p.add_argument("--seed", type=int, default=None, help="random seed for a repeatable run")
    p.add_argument("--gpu", type=int, default=None, help="GPU id to use (CPU when none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing model in --model-dir")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


@cli_entry("oncolens train")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    from oncolens.train.trainer import run_training
    result = run_training(args)
    print("best val accuracy {:.4f}, macro-F1 {:.4f} at epoch {}; model in {}".format(
        result["accuracy"], result["macro_f1"], result["epoch"], args.model_dir))
    return 0
