"""Checkpoint -> ONNX, as jetson-inference's onnx_export.py does it (Softmax appended,
``input_0`` / ``output_0``), and the bundle's model.json updated to match.
"""
import logging
import os
import warnings

from oncolens.appliance.archs import load_checkpoint, model_from_checkpoint
from oncolens.appliance.bundle import (CAM_OUTPUT_NAME, DEFAULT_INPUT_NAME,
                                       DEFAULT_OUTPUT_NAME, LABELS_TXT, MODEL_JSON,
                                       new_model_info, read_model_info, sha256_file,
                                       write_labels, write_model_info)
from oncolens.appliance.errors import UsageError
from oncolens.appliance.preprocess import imagenet_preprocess

log = logging.getLogger(__name__)

DEFAULT_OPSET = 11  # parsed by TensorRT 8.2 (the Nano) and every later release
MIN_OPSET, MAX_OPSET = 9, 13  # TensorRT 8.2's ONNX parser: opset 13 at most


def wrap_softmax(model):
    """The network followed by Softmax, so the output is probabilities."""
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, net):
            super(WithSoftmax, self).__init__()
            self.net = net

        def forward(self, x):
            return torch.softmax(self.net(x), dim=1)

    return WithSoftmax(model).eval()


def torch_onnx_export(module, example, path, opset, dynamic_batch=False, output_names=None):
    """torch.onnx.export with the TorchScript exporter (opset <= 13 for TensorRT 8.2)."""
    import torch
    output_names = output_names or [DEFAULT_OUTPUT_NAME]
    kwargs = dict(input_names=[DEFAULT_INPUT_NAME], output_names=output_names,
                  opset_version=int(opset), do_constant_folding=True)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {name: {0: "batch"} for name in
                                  [DEFAULT_INPUT_NAME] + list(output_names)}
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            try:
                torch.onnx.export(module, example, tmp, dynamo=False, **kwargs)
            except TypeError:  # torch < 2.5 has no dynamo flag (the Nano's 1.10)
                torch.onnx.export(module, example, tmp, **kwargs)
    os.replace(tmp, path)
    return path


def bundle_info_for(model_dir, ckpt, checkpoint_path):
    """The model.json to update: the one beside the checkpoint, or one made from it."""
    json_path = os.path.join(model_dir, MODEL_JSON)
    if os.path.isfile(json_path):
        return read_model_info(json_path)
    classes = ckpt.get("classes")
    if not classes:
        raise UsageError("{}: the checkpoint has no 'classes' and {} has no model.json".format(
            checkpoint_path, model_dir))
    res = int(ckpt.get("resolution", 224))
    return new_model_info(ckpt["arch"], classes, res,
                          ckpt.get("preprocess") or imagenet_preprocess(res))


def export_module(model, arch, activation=True, cam=False):
    """The module to trace: the network with Softmax (or not), with a CAM output (or not)."""
    if cam:
        from oncolens.export.cam import require_resnet, with_cam
        require_resnet(model, arch)
        return with_cam(model, activation), [DEFAULT_OUTPUT_NAME, CAM_OUTPUT_NAME]
    module = wrap_softmax(model) if activation else model.eval()
    return module, [DEFAULT_OUTPUT_NAME]


def check_export_options(opset, batch, dynamic_batch):
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise UsageError("--opset: expected {}..{} (TensorRT 8.2 on the Nano parses up to {}), "
                         "got {}".format(MIN_OPSET, MAX_OPSET, MAX_OPSET, opset))
    if int(batch) < 1:
        raise UsageError("--batch: expected a positive batch size, got {}".format(batch))
    if dynamic_batch and int(batch) != 1:
        raise UsageError("--batch and --dynamic-batch: give one or the other")


def export_onnx(model_dir, input_name=None, output_name=None, opset=DEFAULT_OPSET,
                activation=True, overwrite=True, batch=1, dynamic_batch=False, cam=False):
    """Export ``model_dir/<input>`` to ONNX; returns (onnx path, updated model.json dict)."""
    import torch
    check_export_options(opset, batch, dynamic_batch)
    checkpoint_path = os.path.join(model_dir, input_name or "model_best.pth.tar")
    ckpt = load_checkpoint(checkpoint_path)
    info = bundle_info_for(model_dir, ckpt, checkpoint_path)
    out_name = output_name or "{}.onnx".format(ckpt["arch"])
    out_path = out_name if os.path.isabs(out_name) else os.path.join(model_dir, out_name)
    if os.path.exists(out_path) and not overwrite:
        raise UsageError("output {} already exists: pass --overwrite".format(out_path))
    model = model_from_checkpoint(ckpt)
    module, output_names = export_module(model, ckpt["arch"], activation, cam)
    c, h, w = info["input"]["shape"]
    torch_onnx_export(module, torch.zeros(int(batch), c, h, w), out_path, opset,
                      dynamic_batch=dynamic_batch, output_names=output_names)
    info["input"].update(name=DEFAULT_INPUT_NAME, dtype="float32", layout="NCHW")
    info["output"] = {"name": DEFAULT_OUTPUT_NAME,
                      "activation": "softmax" if activation else "none"}
    if cam:
        info["output"]["cam"] = CAM_OUTPUT_NAME
    info["onnx"] = {"file": os.path.relpath(out_path, model_dir), "opset": int(opset),
                    "batch": "dynamic" if dynamic_batch else int(batch),
                    "sha256": sha256_file(out_path),
                    "checkpoint": os.path.basename(checkpoint_path),
                    "checkpoint_sha256": sha256_file(checkpoint_path)}
    info["engines"] = []  # engines of an older ONNX no longer match it
    write_model_info(os.path.join(model_dir, MODEL_JSON), info)
    if not os.path.isfile(os.path.join(model_dir, LABELS_TXT)):
        write_labels(os.path.join(model_dir, LABELS_TXT), info["labels"])
    log.info("exported %s (opset %d, batch %s, %s%s)", out_path, opset,
             "dynamic" if dynamic_batch else batch,
             "probabilities" if activation else "logits", ", cam_0" if cam else "")
    return out_path, info
