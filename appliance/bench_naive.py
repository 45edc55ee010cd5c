"""The naive baseline that ``oncolens bench`` measures against: the per-image PyTorch loop of
the seed tutorials (PIL decode -> torchvision Resize/CenterCrop/ToTensor/Normalize -> eager
model at batch 1 -> softmax), with no worker pool and no batching.
"""
import logging
import os
import time

from oncolens.appliance.errors import (BundleError, ImageReadError, MissingDependency,
                                       OncoLensError, plural)
from oncolens.appliance.bench_measure import NOT_A_NUMBER
from oncolens.appliance.imageio import check_format, open_regular
from oncolens.appliance.postprocess import finite_rows

log = logging.getLogger(__name__)


def checkpoint_of(bundle):
    """The checkpoint the bundle's ONNX was exported from."""
    onnx = bundle.info.get("onnx") or {}
    for name in (onnx.get("checkpoint"), "model_best.pth.tar", "checkpoint.pth.tar"):
        if name and os.path.isfile(bundle.path(name)):
            return bundle.path(name)
    raise BundleError("{}: no checkpoint (model_best.pth.tar) for the PyTorch baseline".format(
        bundle.dir))


class NaiveTorch(object):
    """One image at a time, exactly as the tutorials write it; times every stage.

    A file PIL cannot read (or of a format the appliance does not read either, so both
    loops time the same images) is skipped and passed to ``on_unreadable(path, reason)``.
    """

    def __init__(self, bundle, device="cpu", on_unreadable=None):
        try:
            import torch
            import torchvision.transforms as T
            from PIL import Image
        except ImportError as exc:
            raise MissingDependency(getattr(exc, "name", None) or "torch",
                                    "the PyTorch baseline", "pip install 'oncolens[train]'")
        from oncolens.appliance.archs import load_checkpoint, model_from_checkpoint
        self.torch, self.Image = torch, Image
        self.on_unreadable = on_unreadable or (lambda path, reason: log.warning("%s", reason))
        self.device = torch.device(device or "cpu")
        self.model = model_from_checkpoint(load_checkpoint(checkpoint_of(bundle))).eval()
        self.model.to(self.device)
        # on a GPU, wait for the kernels so the inference stage is timed, not queued
        self.sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        _, size, _ = bundle.input_shape
        ratio = float(bundle.preprocess.get("crop_ratio", 0.875))
        spec = bundle.preprocess
        self.transform = T.Compose([
            T.Resize(int(round(size / ratio))), T.CenterCrop(size), T.ToTensor(),
            T.Normalize(spec.get("mean", (0.485, 0.456, 0.406)),
                        spec.get("std", (0.229, 0.224, 0.225)))])

    def open_image(self, path):
        """The RGB PIL image; ImageReadError names the file when it cannot be read."""
        check_format(path)  # the same refusal as the appliance's loop
        try:  # from the descriptor checked again: a file swapped for a FIFO is not waited on
            with open_regular(path) as fh:
                return self.Image.open(fh).convert("RGB")
        except ImageReadError:
            raise
        except Exception as exc:  # PIL raises OSError, SyntaxError, DecompressionBombError...
            raise ImageReadError("{}: PIL cannot read it ({})".format(path, exc))

    def classify(self, path):
        """(top-1 index, seconds for decode, preprocess, inference, postprocess); the index
        is NOT_A_NUMBER for an output that is not a number (NaN or infinity)."""
        torch = self.torch
        t0 = time.perf_counter()
        img = self.open_image(path)
        t1 = time.perf_counter()
        x = self.transform(img).unsqueeze(0).to(self.device)
        t2 = time.perf_counter()
        with torch.no_grad():
            out = self.model(x)
        self.sync()
        t3 = time.perf_counter()
        probs = torch.softmax(out, dim=1).cpu().numpy()
        # an output that is not a number has no class (its argmax read as class 0)
        index = int(probs[0].argmax()) if finite_rows(probs)[0] else NOT_A_NUMBER
        t4 = time.perf_counter()
        return index, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)

    def try_classify(self, path):
        """classify(path), or None when the file cannot be read (reported, then skipped)."""
        try:
            return self.classify(path)
        except ImageReadError as exc:
            self.on_unreadable(path, str(exc))
            return None

    def run(self, files, warmup=3):
        """Images/s end to end and network-only, latency and stage shares over ``files``."""
        from oncolens.appliance.benchstats import latency_ms, shares
        for path, _ in files[:warmup]:
            self.try_classify(path)
        stages = [0.0, 0.0, 0.0, 0.0]
        lat = []
        started = time.perf_counter()
        for path, _ in files:
            done = self.try_classify(path)
            if done is not None:
                stages = [a + b for a, b in zip(stages, done[1])]
                lat.append(sum(done[1]))
        wall = time.perf_counter() - started
        if not lat:
            raise OncoLensError("the PyTorch baseline could read none of the {}".format(
                plural(len(files), "file")))
        return {"backend": "torch-eager", "precision": "fp32", "batch_size": 1,
                "pipeline": "PIL + torchvision transforms + eager model, one image at a time",
                "images": len(lat), "seconds": round(wall, 6),
                "end_to_end_ips": len(lat) / wall, "network_ips": len(lat) / stages[2],
                "latency_ms": latency_ms(lat), "stage_share": shares(stages),
                "torch_threads": self.torch.get_num_threads(), "device": str(self.device)}

    def run_single_thread(self, files, warmup=3):
        """The same loop with torch at one thread: on a crowded CPU the tutorial's default
        (one OpenMP thread a core, spin-waiting) can be far slower, and a speed-up measured
        against that alone would flatter us."""
        threads = self.torch.get_num_threads()
        self.torch.set_num_threads(1)
        try:
            result = self.run(files, warmup)
        finally:
            self.torch.set_num_threads(threads)
        result["pipeline"] += ", torch.set_num_threads(1)"
        return result

    def top1(self, files):
        """Top-1 index of each file (-1 for a file that cannot be read, NOT_A_NUMBER for an
        output that is not a number)."""
        return [(self.try_classify(path) or (-1,))[0] for path, _ in files]
