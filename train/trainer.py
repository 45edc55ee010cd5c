"""The training loop: class folders in, checkpoint + bundle (labels.txt, model.json) out."""
import logging
import os
import shutil
import time

import numpy as np

from oncolens import __version__
from oncolens.appliance.archs import build_model, load_checkpoint
from oncolens.appliance.bundle import (MODEL_JSON, LABELS_TXT, new_model_info, sha256_file,
                                       write_labels, write_model_info)
from oncolens.appliance.errors import MissingDependency, UsageError
from oncolens.appliance.preprocess import Preprocessor, imagenet_preprocess
from oncolens.train import metrics
from oncolens.train.data import FolderDataset, TrainAugment, discover_classes, list_samples
from oncolens.train.synth import dataset_provenance

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"


def _torch():
    try:
        import torch
    except ImportError:
        raise MissingDependency("torch", "oncolens train", "pip install 'oncolens[train]'")
    return torch


def _seed_worker(worker_id):
    torch = _torch()
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.rng = np.random.default_rng(torch.initial_seed() % (2 ** 32))


def _device(args):
    torch = _torch()
    if args.gpu is not None:
        if not torch.cuda.is_available():
            raise UsageError("--gpu {}: no CUDA GPU is available here".format(args.gpu))
        return torch.device("cuda", args.gpu)
    return torch.device("cpu")


def _loaders(args, classes, preprocess, input_shape):
    torch = _torch()
    pre = Preprocessor(preprocess, input_shape)
    train_ds = FolderDataset(list_samples(os.path.join(args.data, "train"), classes),
                             TrainAugment(pre, args.seed))
    val_ds = FolderDataset(list_samples(os.path.join(args.data, "val"), classes), pre)
    gen = torch.Generator()
    gen.manual_seed(args.seed if args.seed is not None else int(time.time()))
    common = dict(batch_size=args.batch_size, num_workers=args.workers,
                  worker_init_fn=_seed_worker if args.workers else None)
    train = torch.utils.data.DataLoader(train_ds, shuffle=True, drop_last=False, generator=gen,
                                        **common)
    val = torch.utils.data.DataLoader(val_ds, shuffle=False, **common)
    return train, val


def evaluate(model, loader, device, num_classes):
    """Run ``model`` over ``loader``: (loss, metrics summary, probabilities, targets)."""
    torch = _torch()
    model.eval()
    losses, probs, targets = [], [], []
    with torch.no_grad():
        for images, target in loader:
            logits = model(images.to(device)).float()
            losses.append(float(torch.nn.functional.cross_entropy(
                logits, target.to(device), reduction="sum")))
            probs.append(torch.softmax(logits, 1).cpu().numpy())
            targets.append(target.numpy())
    probs = np.concatenate(probs)
    targets = np.concatenate(targets)
    summary = metrics.summary(targets, probs.argmax(1), num_classes)
    return sum(losses) / len(targets), summary, probs, targets


def _train_epoch(model, loader, optimizer, device, epoch, print_freq):
    torch = _torch()
    model.train()
    total, seen, start = 0.0, 0, time.time()
    for step, (images, target) in enumerate(loader):
        logits = model(images.to(device))
        loss = torch.nn.functional.cross_entropy(logits, target.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(target)
        seen += len(target)
        if print_freq and step % print_freq == 0:
            log.debug("epoch %d [%d/%d] loss %.4f", epoch, step, len(loader), float(loss.detach()))
    return total / max(1, seen), seen / max(1e-9, time.time() - start)


def _prepare_model_dir(args):
    best = os.path.join(args.model_dir, BEST)
    if os.path.exists(best) and not (args.overwrite or args.resume or args.evaluate):
        raise UsageError("--model-dir {} already holds a trained model: pass --overwrite to "
                         "replace it or --resume to continue it".format(args.model_dir))
    if not os.path.isdir(args.model_dir):
        os.makedirs(args.model_dir)


def _save(state, model_dir, is_best):
    torch = _torch()
    path = os.path.join(model_dir, CHECKPOINT)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    if is_best:
        shutil.copyfile(path, os.path.join(model_dir, BEST))


def write_bundle(args, classes, preprocess, best):
    """labels.txt and model.json beside the checkpoints."""
    write_labels(os.path.join(args.model_dir, LABELS_TXT), classes)
    info = new_model_info(
        args.arch, classes, args.resolution, preprocess,
        checkpoint={"file": BEST, "sha256": sha256_file(os.path.join(args.model_dir, BEST))},
        training={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                  "seed": args.seed, "best_epoch": best["epoch"],
                  "oncolens_version": __version__},
        metrics={"val": {"accuracy": best["accuracy"], "macro_f1": best["macro_f1"]}},
        provenance=dataset_provenance(args.data))
    write_model_info(os.path.join(args.model_dir, MODEL_JSON), info)
    return info


def run_training(args):
    """Train as the command line says; returns the best epoch's validation metrics."""
    torch = _torch()
    if args.seed is not None:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
    _prepare_model_dir(args)
    device = _device(args)
    classes = discover_classes(args.data)
    preprocess = imagenet_preprocess(args.resolution)
    input_shape = (3, args.resolution, args.resolution)
    train_loader, val_loader = _loaders(args, classes, preprocess, input_shape)
    model = build_model(args.arch, len(classes)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    best = {"macro_f1": -1.0, "accuracy": 0.0, "epoch": -1}
    start_epoch = args.start_epoch
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        model.load_state_dict(ckpt["state_dict"])
        if "optimizer" in ckpt and not args.evaluate:
            optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt.get("epoch", start_epoch)
        best = ckpt.get("best", best)
    if args.evaluate:
        loss, summary, _, _ = evaluate(model, val_loader, device, len(classes))
        log.info("val loss %.4f accuracy %.4f macro-F1 %.4f", loss, summary["accuracy"],
                 summary["macro_f1"])
        return dict(summary, epoch=start_epoch)
    for epoch in range(start_epoch, args.epochs):
        for group in optimizer.param_groups:  # jetson-inference: /10 every 30 epochs
            group["lr"] = args.lr * (0.1 ** (epoch // 30))
        train_loss, ips = _train_epoch(model, train_loader, optimizer, device, epoch,
                                       args.print_freq)
        val_loss, summary, _, _ = evaluate(model, val_loader, device, len(classes))
        is_best = summary["macro_f1"] > best["macro_f1"]
        if is_best:
            best = {"macro_f1": summary["macro_f1"], "accuracy": summary["accuracy"],
                    "epoch": epoch}
        log.info("epoch %d/%d  train loss %.4f (%.0f img/s)  val loss %.4f  acc %.4f  "
                 "macro-F1 %.4f%s", epoch + 1, args.epochs, train_loss, ips, val_loss,
                 summary["accuracy"], summary["macro_f1"], "  *best*" if is_best else "")
        _save({"epoch": epoch + 1, "arch": args.arch, "resolution": args.resolution,
               "classes": classes, "num_classes": len(classes), "state_dict": model.state_dict(),
               "accuracy": summary["accuracy"], "loss": val_loss,
               "optimizer": optimizer.state_dict(), "best": best, "preprocess": preprocess,
               "oncolens_version": __version__}, args.model_dir, is_best)
    write_bundle(args, classes, preprocess, best)
    return best
