"""Checkpoint -> ONNX, as jetson-inference's onnx_export.py does it (Softmax appended,
``input_0`` / ``output_0``), and the bundle's model.json updated to match.
"""
import logging
import os
import re
import sys
import warnings

from oncolens.appliance.archs import (CHECKPOINT_SUFFIXES, load_checkpoint_hashed,
                                      model_from_checkpoint)
from oncolens.appliance.bundle import (CAM_OUTPUT_NAME, DEFAULT_INPUT_NAME,
                                       DEFAULT_OUTPUT_NAME, LABELS_TXT, MODEL_JSON, Bundle,
                                       labels_text, model_info_writer, sha256_file)
from oncolens.appliance.engines import ENGINE_SUFFIXES, onnx_file_stat
from oncolens.appliance.errors import OncoLensError, UsageError
from oncolens.appliance.locks import folder_locked
from oncolens.appliance.onnxrecord import record_stat
from oncolens.appliance.outpaths import (check_output_dir, check_output_file,
                                          drop_empty_folders, first_existing, inside,
                                          replace_file, replace_together, temp_path,
                                          text_writer, write_temp)
from oncolens.export.onnx_bundle import bundle_info_for, labels_or_none

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


class _TorchLogCapture(object):
    """Holds what torch's exporter writes to file descriptor 1 while it runs, and gives it
    back to stdout afterwards unless the export failed. torch 2.x's TorchScript exporter turns
    its C++ log on for every export (setup_onnx_logging tests a function object for truth), so
    an export that fails dumps the whole graph (dozens of lines) on stdout before the one line
    that says why; on failure it goes to the debug log instead."""

    def __init__(self):
        self.saved = self.buf = None

    def __enter__(self):
        import tempfile
        try:
            sys.stdout.flush()
            self.saved = os.dup(1)
        except (OSError, ValueError, AttributeError):  # no fd 1 (a daemon): nothing to hold
            self.saved = None
            return self
        self.buf = tempfile.TemporaryFile()
        os.dup2(self.buf.fileno(), 1)
        return self

    def text(self):
        if self.buf is None:
            return ""
        self.buf.seek(0)
        return self.buf.read().decode("utf-8", "replace").strip()

    def __exit__(self, kind, exc, tb):
        if self.saved is None:
            return False
        os.dup2(self.saved, 1)
        os.close(self.saved)
        held = self.text()
        self.buf.close()
        self.buf = None
        if held and kind is None:
            sys.stdout.write(held + "\n")
            sys.stdout.flush()
        return False


def _opset_advice(message, opset):
    """What to do when torch says the operator needs a later opset ('... was added in version
    12 ...'): the --opset that exports it, or that no opset TensorRT 8.2 parses can."""
    found = re.search(r"added in (?:opset )?version (\d+)", message)
    if not found or int(found.group(1)) <= int(opset):
        return ""
    need = int(found.group(1))
    if need <= MAX_OPSET:
        return ": pass --opset {} (TensorRT 8.2 on the Nano parses up to {})".format(
            need, MAX_OPSET)
    return ": it needs opset {}, past the {} TensorRT 8.2 on the Nano parses".format(
        need, MAX_OPSET)


def torch_onnx_export(module, example, path, opset, dynamic_batch=False, output_names=None):
    """torch.onnx.export with the TorchScript exporter (opset <= 13 for TensorRT 8.2)."""
    import torch
    output_names = output_names or [DEFAULT_OUTPUT_NAME]
    kwargs = dict(input_names=[DEFAULT_INPUT_NAME], output_names=output_names,
                  opset_version=int(opset), do_constant_folding=True)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {name: {0: "batch"} for name in
                                  [DEFAULT_INPUT_NAME] + list(output_names)}
    with warnings.catch_warnings(), _TorchLogCapture() as torch_log:
        warnings.simplefilter("ignore")
        with torch.no_grad():
            try:
                replace_file(path, lambda tmp: _export(module, example, tmp, kwargs))
            except Exception as exc:  # an operator ONNX (at this opset) has no form for
                if isinstance(exc, (OSError, MemoryError)):
                    raise
                held = torch_log.text()
                if held:
                    log.debug("torch's export log:\n%s", held)
                text = str(exc).strip().splitlines()
                raise OncoLensError("torch cannot export this network to ONNX opset {} ({}: "
                                    "{}){}".format(opset, type(exc).__name__,
                                                   text[0] if text else "no message",
                                                   _opset_advice(str(exc), opset)))
    return path


def _export(module, example, path, kwargs):
    import torch
    try:
        torch.onnx.export(module, example, path, dynamo=False, **kwargs)
    except TypeError:  # torch < 2.5 has no dynamo flag (the Nano's 1.10)
        torch.onnx.export(module, example, path, **kwargs)


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


def output_path(model_dir, output_name, arch):
    """Where --output goes, by onnx_export.py's rule: a bare file name (and the default,
    ``<arch>.onnx``) into --model-dir; a path with a folder in it as given, from the
    current folder (``--model-dir=models/x --output=models/x/resnet18.onnx`` is
    models/x/resnet18.onnx, not models/x/models/x/resnet18.onnx)."""
    name = output_name or "{}.onnx".format(arch)
    return name if os.path.dirname(name) else os.path.join(model_dir, name)


def check_not_a_bundle_file(out_path, model_dir, checkpoint_path):
    """--output never names a checkpoint (the one exported above all), model.json or
    labels.txt: --overwrite replaces an ONNX file, never the trained model or the files the
    export rewrites after it; nor an engine's name, which every runtime would open (and
    model.json record) as a TensorRT engine."""
    protected = [(checkpoint_path, "the checkpoint being exported"),
                 (os.path.join(model_dir, MODEL_JSON), "the bundle's model.json"),
                 (os.path.join(model_dir, LABELS_TXT), "the bundle's labels.txt")]
    same = [what for p, what in protected if os.path.abspath(p) == os.path.abspath(out_path)
            or (os.path.exists(p) and os.path.exists(out_path) and os.path.samefile(p, out_path))]
    kind = "a checkpoint's name" if out_path.lower().endswith(CHECKPOINT_SUFFIXES) else \
        "a TensorRT engine's name (the bundle would be opened with TensorRT)" if \
        out_path.lower().endswith(ENGINE_SUFFIXES) else None
    if same or kind:
        raise UsageError("--output {} is {}: expected an ONNX file name (the default is "
                         "<arch>.onnx)".format(out_path, same[0] if same else kind))


def check_onnx_output(out_path, model_dir, given):
    """--output names an ``.onnx`` file inside the model folder (a sub-folder is fine): the
    bundle is the folder, copied whole to the device, and model.json records the file by its
    path inside it. An image's name, or a file outside, ran nowhere without being told."""
    if not out_path.lower().endswith(".onnx"):
        raise UsageError("--output {}: expected an ONNX file name ending in .onnx (the default "
                         "is <arch>.onnx)".format(given))
    folder = os.path.realpath(model_dir)
    if not inside(os.path.realpath(out_path), folder):
        named = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(out_path))),
                             os.path.basename(out_path))  # the link's own place
        if os.path.islink(out_path) and inside(named, folder):
            raise UsageError("--output {}: a link to {}, which is outside the model folder {}: "
                             "expected an ONNX file name inside --model-dir (the export would "
                             "replace the link itself, not write where it points): remove the "
                             "link or give another name".format(
                                 given, _link_target(out_path), model_dir))
        raise UsageError("--output {}: outside the model folder {}: expected a file name inside "
                         "--model-dir (the bundle is that folder; model.json records the ONNX "
                         "by its path there)".format(given, model_dir))


def _link_target(path):
    """Where the link ``path`` points: as it is written, and as resolved where that differs
    (a relative or chained link)."""
    written, resolved = os.readlink(path), os.path.realpath(path)
    return written if written == resolved else "{} ({})".format(written, resolved)


def _staged(out_path):
    """Where the export is written until it is checked: a file of its own beside its final
    place (``.<name>.<random>.unchecked.onnx``), so two exports into one folder never share
    it."""
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    return temp_path(out_path, ".unchecked.onnx")


def _path_inside(out_path, model_dir):
    """``out_path`` by its path inside ``model_dir``, either of them reached through a link
    (check_onnx_output made sure it is inside). The file's own name is kept: a link there
    is replaced by the export, not followed."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(out_path)))
    return os.path.relpath(os.path.join(folder, os.path.basename(out_path)),
                           os.path.realpath(model_dir))


def _record(info, model_dir, out_path, staged, checkpoint_path, checkpoint_sha, opset, batch,
            dynamic_batch, activation, cam):
    """Fill ``info`` for the new ONNX (written at ``staged``, to be named ``out_path``)."""
    info["input"].update(name=DEFAULT_INPUT_NAME, dtype="float32", layout="NCHW")
    info["output"] = {"name": DEFAULT_OUTPUT_NAME,
                      "activation": "softmax" if activation else "none"}
    if cam:
        info["output"]["cam"] = CAM_OUTPUT_NAME
    stat = record_stat(onnx_file_stat(staged))  # before the hash; moving it keeps them
    info["onnx"] = dict(stat, file=_path_inside(out_path, model_dir), opset=int(opset),
                        batch="dynamic" if dynamic_batch else int(batch),
                        sha256=sha256_file(staged),
                        checkpoint=os.path.relpath(checkpoint_path, model_dir),
                        checkpoint_sha256=checkpoint_sha)
    info["engines"] = []  # engines of an older ONNX no longer match it
    return info


def _commit(model_dir, info, staged, out_path):
    """The checked export takes its name, and model.json and labels.txt follow it, all or
    none: both are written beside their places first, then the three moved together, so a
    full disk or Ctrl-C leaves the bundle as it was, never the new ONNX with the old record."""
    json_path = os.path.join(model_dir, MODEL_JSON)
    write_json = model_info_writer(json_path, info)  # refused here: nothing written yet
    labels_path = os.path.join(model_dir, LABELS_TXT)
    had_labels = os.path.isfile(labels_path)
    moves = [(staged, out_path)]
    try:
        moves.append((write_temp(json_path, write_json), json_path))
        if not had_labels or labels_or_none(labels_path) != info["labels"]:
            moves.append((write_temp(labels_path, text_writer(labels_text(info["labels"]))),
                          labels_path))
    except BaseException:
        for tmp, _ in moves[1:]:
            os.remove(tmp)
        raise
    with folder_locked(model_dir, "{}: an engine build is adding its engine to it; waiting "
                       "for it to finish".format(json_path)):  # not written back over this
        replace_together(moves)
    if moves[2:] and had_labels:
        log.warning("%s rewritten with the checkpoint's classes: %s", labels_path,
                    ", ".join(info["labels"]))


def export_onnx(model_dir, input_name=None, output_name=None, opset=DEFAULT_OPSET,
                activation=True, overwrite=True, batch=1, dynamic_batch=False, cam=False,
                check=None):
    """Export ``model_dir/<input>`` to ONNX; returns (onnx path, updated model.json dict).

    ``check(bundle)``, when given, runs on the new file before anything in the bundle is
    replaced: when it raises, the unchecked file is removed and the ONNX, model.json and
    labels.txt already there are left as they were.
    """
    import torch
    check_export_options(opset, batch, dynamic_batch)
    check_output_dir(model_dir, "--model-dir")  # model.json is rewritten there
    checkpoint_path = os.path.join(model_dir, input_name or "model_best.pth.tar")
    # the checksum recorded is that of the bytes loaded: training may save a best epoch now
    ckpt, checkpoint_sha = load_checkpoint_hashed(checkpoint_path, "--input",
                                                  input_name or "model_best.pth.tar")
    out_path = output_path(model_dir, output_name, ckpt["arch"])
    check_not_a_bundle_file(out_path, model_dir, checkpoint_path)
    check_onnx_output(out_path, model_dir, output_name or os.path.basename(out_path))
    check_output_file(out_path, "--output", overwrite)
    model = model_from_checkpoint(ckpt, checkpoint_path)  # weights of another arch: one line
    info, labels_source = bundle_info_for(model_dir, ckpt, checkpoint_path, checkpoint_sha,
                                          overwrite)
    module, output_names = export_module(model, ckpt["arch"], activation, cam)
    c, h, w = info["input"]["shape"]
    folder = os.path.dirname(os.path.abspath(out_path))
    existed = first_existing(folder)  # what _staged makes above it is removed on failure
    staged = None
    try:
        staged = _staged(out_path)
        torch_onnx_export(module, torch.zeros(int(batch), c, h, w), staged, opset,
                          dynamic_batch=dynamic_batch, output_names=output_names)
        _record(info, model_dir, out_path, staged, checkpoint_path, checkpoint_sha, opset,
                batch, dynamic_batch, activation, cam)
        if check is not None:
            check(Bundle(model_dir, info, info["labels"], staged, labels_source))
        _commit(model_dir, info, staged, out_path)
    except BaseException:
        if staged and os.path.exists(staged):
            os.remove(staged)
        drop_empty_folders([folder], existed)
        raise
    log.info("exported %s (opset %d, batch %s, %s%s)", out_path, opset,
             "dynamic" if dynamic_batch else batch,
             "probabilities" if activation else "logits", ", cam_0" if cam else "")
    return out_path, info
