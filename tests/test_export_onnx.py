"""oncolens export onnx / check: jetson-inference compatible graphs, batch options, CAM,
and a check that catches a wrong export."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_cli


def _session(path):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _copy_bundle(src, tmp_path, name="model"):
    """The files an export needs (not the training checkpoint with its optimizer state)."""
    dst = tmp_path / name
    dst.mkdir()
    for f in ("model_best.pth.tar", "model.json", "labels.txt", "resnet18.onnx"):
        shutil.copy(os.path.join(src, f), str(dst))
    return str(dst)


def _random_checkpoint(model_dir, arch, resolution, classes=("benign", "malignant", "normal")):
    """A freshly initialised network saved with jetson-inference's checkpoint keys."""
    import torch
    from oncolens.appliance.archs import build_model
    torch.manual_seed(0)
    model = build_model(arch, len(classes))
    os.makedirs(model_dir)
    torch.save({"epoch": 0, "arch": arch, "resolution": resolution, "classes": list(classes),
                "num_classes": len(classes), "state_dict": model.state_dict()},
               os.path.join(model_dir, "model_best.pth.tar"))
    return model


def test_default_export_is_what_jetson_inference_loads(tiny_bundle):
    import onnx
    path = os.path.join(tiny_bundle, "resnet18.onnx")
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == ["input_0"]
    assert [o.name for o in model.graph.output] == ["output_0"]
    assert model.opset_import[0].version == 11
    assert model.graph.node[-1].op_type == "Softmax"
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]
    probs = _session(path).run(None, {"input_0": np.random.rand(1, 3, 32, 32).astype(
        np.float32)})[0]
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1) < 1e-5
    import json
    info = json.load(open(os.path.join(tiny_bundle, "model.json")))
    assert info["onnx"]["opset"] == 11 and info["onnx"]["batch"] == 1
    assert info["output"] == {"name": "output_0", "activation": "softmax"}


@pytest.mark.parametrize("flag, logits", [("--no-activation", True),
                                          ("--no_activation=true", True),
                                          ("--no-activation=false", False)])
def test_no_activation_is_a_real_boolean(tiny_bundle, tmp_path, flag, logits):
    import onnx
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, flag, "--output",
                              "x.onnx", "--opset", 13, "--no-check"])
    assert code == 0, err
    path = os.path.join(model_dir, "x.onnx")
    graph = onnx.load(path)
    assert graph.opset_import[0].version == 13
    assert (graph.graph.node[-1].op_type == "Softmax") is (not logits)
    x = np.random.RandomState(1).rand(1, 3, 32, 32).astype(np.float32)
    raw = _session(path).run(None, {"input_0": x})[0]
    probs = _session(os.path.join(tiny_bundle, "resnet18.onnx")).run(None, {"input_0": x})[0]
    if logits:
        assert abs(float(raw.sum()) - 1) > 1e-3
        e = np.exp(raw - raw.max())
        np.testing.assert_allclose(e / e.sum(), probs, atol=1e-5)
    else:
        np.testing.assert_allclose(raw, probs, atol=1e-6)


def test_dynamic_batch_runs_at_1_and_7(tiny_bundle, tmp_path):
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--dynamic-batch",
                              "--overwrite"])
    assert code == 0, err
    assert "check: torch vs ONNX Runtime: top-1 agreement 100.00%" in out
    sess = _session(os.path.join(model_dir, "resnet18.onnx"))
    assert isinstance(sess.get_inputs()[0].shape[0], str)
    x = np.random.RandomState(2).rand(7, 3, 32, 32).astype(np.float32)
    seven = sess.run(None, {"input_0": x})[0]
    one = sess.run(None, {"input_0": x[3:4]})[0]
    assert seven.shape == (7, 3) and one.shape == (1, 3)
    np.testing.assert_allclose(one[0], seven[3], atol=1e-5)


def test_fixed_batch_and_option_errors(tiny_bundle, tmp_path):
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    code, _, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code != 0 and "already exists" in err and "--overwrite" in err
    code, _, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--opset", 17,
                            "--overwrite"])
    assert code == 2 and "--opset" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--batch", 4,
                            "--overwrite", "--no-check"])
    assert code == 0, err
    sess = _session(os.path.join(model_dir, "resnet18.onnx"))
    assert sess.get_inputs()[0].shape == [4, 3, 32, 32]


def _corrupt_largest_2d_initializer(path):
    import onnx
    from onnx import numpy_helper
    model = onnx.load(path)
    target = max((t for t in model.graph.initializer if len(t.dims) == 2),
                 key=lambda t: t.dims[0] * t.dims[1])
    arr = numpy_helper.to_array(target).copy()
    arr[:] = np.random.RandomState(0).normal(0, 1, arr.shape)   # the classifier, scrambled
    target.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), target.name))
    onnx.save(model, path)


def test_check_passes_on_real_images_and_catches_a_corrupted_weight(tiny_bundle, tiny_data,
                                                                   tmp_path):
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    code, out, err = run_cli(["export", "check", "--model-dir", model_dir, "--images", tiny_data])
    assert code == 0, err
    assert "9 real images from {}".format(os.path.join(tiny_data, "val")) in out
    onnx = os.path.join(model_dir, "resnet18.onnx")
    _corrupt_largest_2d_initializer(onnx)
    code, out, err = run_cli(["export", "check", "--model-dir", model_dir, "--images", tiny_data])
    assert code == 1 and len(err.strip().splitlines()) == 1  # not the export model.json records
    assert "{} is not the ONNX {} describes".format(
        onnx, os.path.join(model_dir, "model.json")) in err
    _record_as_exported(model_dir, onnx)   # as if the export itself had written it so
    code, out, err = run_cli(["export", "check", "--model-dir", model_dir, "--images", tiny_data])
    assert code == 1
    assert "does not match" in err and "resnet18.onnx" in err
    assert len(err.strip().splitlines()) == 1


def _record_as_exported(model_dir, onnx):
    from oncolens.appliance.bundle import sha256_file
    path = os.path.join(model_dir, "model.json")
    with open(path) as fh:
        info = json.load(fh)
    st = os.stat(onnx)
    info["onnx"].update(sha256=sha256_file(onnx), size=st.st_size, mtime_ns=st.st_mtime_ns)
    with open(path, "w") as fh:
        json.dump(info, fh)


def test_check_on_busi_validation_images(tiny_bundle, busi, tmp_path):
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    code, out, err = run_cli(["export", "check", "--model-dir", model_dir, "--images", busi,
                              "--check-count", 12])
    assert code == 0, err
    assert "12 real images from {}".format(os.path.join(busi, "val")) in out


def _torch_cam(model, x):
    """The CAM computed independently: a hook on layer4 and the fc weights in numpy."""
    import torch
    feats = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("f", o))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    handle.remove()
    f = feats["f"].numpy()
    w = model.fc.weight.detach().numpy()
    cams = []
    for n in range(len(x)):
        k = int(logits[n].argmax())
        cam = np.tensordot(w[k], f[n], axes=(0, 0))
        cams.append((cam - cam.min()) / (cam.max() - cam.min() + 1e-6))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True), np.stack(cams)


def test_cam_output_equals_the_map_computed_in_torch(tmp_path):
    import onnx
    model_dir = str(tmp_path / "cam")
    model = _random_checkpoint(model_dir, "resnet18", 96)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--cam",
                              "--dynamic-batch"])
    assert code == 0, err
    assert "cam_0 max |d|" in out
    path = os.path.join(model_dir, "resnet18.onnx")
    graph = onnx.load(path)
    assert [o.name for o in graph.graph.output] == ["output_0", "cam_0"]
    x = np.random.RandomState(3).normal(0, 1, (5, 3, 96, 96)).astype(np.float32)
    probs, cam = _session(path).run(None, {"input_0": x})
    ref_probs, ref_cam = _torch_cam(model.eval(), x)
    assert cam.shape == (5, 3, 3) and cam.dtype == np.float32
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5)
    np.testing.assert_allclose(cam, ref_cam, atol=1e-4)
    assert np.allclose(cam.reshape(5, -1).min(1), 0) and np.allclose(cam.reshape(5, -1).max(1),
                                                                      1, atol=1e-4)


def test_cam_is_refused_for_a_network_that_is_not_a_resnet(tmp_path):
    model_dir = str(tmp_path / "mnv3")
    _random_checkpoint(model_dir, "mobilenet_v3_small", 32)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--cam"])
    assert code == 2
    assert "--cam: arch 'mobilenet_v3_small' is not a ResNet" in err
    assert not os.path.exists(os.path.join(model_dir, "mobilenet_v3_small.onnx"))


def test_efficientnet_lite0_exports_its_relu6_as_clip_and_matches_torch(tmp_path):
    import onnx
    import torch
    model_dir = str(tmp_path / "lite0")
    model = _random_checkpoint(model_dir, "efficientnet_lite0", 64)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 0, err
    assert "top-1 agreement 100.00%" in out
    path = os.path.join(model_dir, "efficientnet_lite0.onnx")
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("Clip") == 33  # stem, 16 blocks (expand + depthwise), head
    x = np.random.RandomState(4).normal(0, 1, (1, 3, 64, 64)).astype(np.float32)
    probs = _session(path).run(None, {"input_0": x})[0]
    with torch.no_grad():
        ref = torch.softmax(model.eval()(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_lite0_inplace_relu6_trains_like_a_clamp():
    """The in-place activation (1.46x faster training here) gives clamp's values and
    gradients."""
    import torch
    from oncolens.appliance.archs import build_model
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", 3).train()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    torch.manual_seed(1)
    out = model(x)
    grad = torch.autograd.grad(out[:, 0].sum(), x)[0]
    hardtanh, calls = torch.nn.functional.hardtanh, []

    def clamp(t, lo, hi, inplace=False):
        calls.append(inplace)
        return torch.clamp(t, lo, hi)

    try:  # the same network with an out-of-place clamp
        torch.nn.functional.hardtanh = clamp
        torch.manual_seed(1)
        ref = model(x)
        ref_grad = torch.autograd.grad(ref[:, 0].sum(), x)[0]
    finally:
        torch.nn.functional.hardtanh = hardtanh
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(grad.numpy(), ref_grad.numpy(), atol=1e-6)
    assert len(calls) == 33 and all(calls)
    assert float(grad.abs().max()) > 0


def test_an_operator_onnx_cannot_express_is_one_line_and_leaves_no_file(tmp_path):
    import torch
    from oncolens.appliance.errors import OncoLensError
    from oncolens.export.onnx_export import torch_onnx_export

    class Spectrum(torch.nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    path = str(tmp_path / "m.onnx")
    with pytest.raises(OncoLensError, match=r"cannot export this network to ONNX opset 13 "
                                            r"\(UnsupportedOperatorError: .*fft_rfft"):
        torch_onnx_export(Spectrum(), torch.zeros(1, 3, 8, 8), path, 13)
    assert os.listdir(str(tmp_path)) == []


def test_an_operator_of_a_later_opset_names_the_opset_to_pass(tmp_path, capfd):
    """maxvit_t's einsum exports from opset 12: at the default 11 the line says --opset 12,
    and torch's dump of the graph (on stdout, dozens of lines) is not printed."""
    import torch
    from oncolens.appliance.errors import OncoLensError
    from oncolens.export.onnx_export import torch_onnx_export

    class Einsum(torch.nn.Module):
        def forward(self, x):
            return torch.einsum("bchw,bchw->bc", x, x)

    path = str(tmp_path / "m.onnx")
    with pytest.raises(OncoLensError, match=r"opset 11 \(UnsupportedOperatorError: .*einsum.*\): "
                                            r"pass --opset 12 \(TensorRT 8.2 on the Nano parses "
                                            r"up to 13\)$"):
        torch_onnx_export(Einsum(), torch.zeros(1, 3, 8, 8), path, 11)
    out, err = capfd.readouterr()
    assert "graph" not in out + err and "einsum" not in out + err, (out, err)
    print("printed before")
    torch_onnx_export(Einsum(), torch.zeros(1, 3, 8, 8), path, 12)
    print("printed after")
    assert capfd.readouterr().out == "printed before\nprinted after\n"
    assert os.listdir(str(tmp_path)) == ["m.onnx"]


@pytest.mark.parametrize("argv, says", [
    (["selftest", "--model-dir", "m"],
     "unknown subcommand 'selftest' (expected onnx, check, engine, verify; "
     "did you mean 'oncolens selftest'?)"),
    (["onxx"], "unknown subcommand 'onxx' (expected onnx, check, engine, verify; "
               "did you mean 'oncolens export onnx'?)"),
    (["--model-dir", "m"], "expected a subcommand (onnx, check, engine, verify) before "
                           "'--model-dir'"),
])
def test_export_unknown_subcommand_is_one_line_on_stderr(argv, says):
    code, out, err = run_cli(["export"] + argv)
    assert code == 2
    assert err == "oncolens export: error: {}\n".format(says)
    assert out == ""
