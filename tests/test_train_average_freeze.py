"""Weight averaging, early-layer freezing and mixup: what each does to the saved weights."""
import os

import numpy as np
import pytest

from conftest import run_cli

torch = pytest.importorskip("torch")


def _load(path):
    return torch.load(path, weights_only=False)


def test_weight_average_follows_the_exponential_rule():
    from oncolens.train.ema import WeightAverage
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    avg = WeightAverage(net, epochs=10, steps_per_epoch=10)  # decay 0.99
    assert avg.decay == pytest.approx(0.99)
    before = avg.model[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].num_batches_tracked.fill_(7)
    avg.update(net)  # first update: decay min(0.99, 2/11)
    d = 2.0 / 11.0
    assert torch.allclose(avg.model[0].weight, before * d + net[0].weight * (1 - d))
    assert int(avg.model[1].num_batches_tracked) == 7  # integer buffers are copied
    assert not any(p.requires_grad for p in avg.model.parameters())


@pytest.mark.parametrize("arch,first_live", [("resnet18", "layer2.0.conv1.weight"),
                                             ("efficientnet_lite0", "_blocks.3._depthwise_conv")])
def test_freeze_stops_at_quarter_resolution(arch, first_live):
    from oncolens.appliance.archs import build_model
    from oncolens.train.freeze import freeze_early_layers
    net = build_model(arch, 3)
    assert freeze_early_layers(net, 64) > 0
    names = [n for n, _ in net.named_parameters()]
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    live = [n for n, p in net.named_parameters() if p.requires_grad]
    assert names[0] in frozen and names[-1] in live  # stem frozen, classifier trains
    assert any(n.startswith(first_live) for n in live)
    if arch == "resnet18":
        assert all(n.startswith(("conv1", "bn1", "layer1.")) for n in frozen)
        assert all(n in frozen for n in names if n.startswith("layer1."))


def test_training_from_a_weights_file_keeps_frozen_layers(tmp_path, tiny_data):
    from oncolens.appliance.archs import build_model
    torch.manual_seed(0)
    start = build_model("resnet18", 1000).state_dict()
    path = str(tmp_path / "w.pth")
    torch.save(start, path)
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--weights", path, "--resolution", 32, "-b", 6, "-j", 0,
                              "--seed", 0, "--ema-epochs", 1, "--lr", "0.01"])
    assert code == 0, err
    ckpt = _load(os.path.join(model_dir, "checkpoint.pth.tar"))
    saved, live = ckpt["state_dict"], ckpt["train_state_dict"]
    assert torch.equal(live["conv1.weight"], start["conv1.weight"])
    assert torch.equal(live["layer1.0.conv2.weight"], start["layer1.0.conv2.weight"])
    assert torch.allclose(saved["conv1.weight"], start["conv1.weight"], atol=1e-6)
    assert not torch.equal(saved["layer4.1.conv2.weight"], start["layer4.1.conv2.weight"])
    # the saved (averaged) weights lie between the start and the live weights, not on them
    assert not torch.equal(saved["layer4.1.conv2.weight"], live["layer4.1.conv2.weight"])
    assert ckpt["ema"]["updates"] > 0
    from oncolens.appliance.bundle import read_model_info
    training = read_model_info(os.path.join(model_dir, "model.json"))["training"]
    assert training["freeze_early"] is True and training["ema_epochs"] == 1
    assert training["trivial_augment"] is True  # auto: on for a fine-tune


def test_no_pretrained_freezes_nothing_and_ema_off_saves_raw_weights(tmp_path, tiny_data):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--arch", "simple-cnn", "--resolution", 32, "-b", 6, "-j", 0,
                              "--seed", 0, "--no-pretrained", "--ema-epochs", 0,
                              "--mixup", "0.4"])
    assert code == 0, err
    ckpt = _load(os.path.join(model_dir, "checkpoint.pth.tar"))
    assert "train_state_dict" not in ckpt and "ema" not in ckpt
    from oncolens.appliance.bundle import read_model_info
    training = read_model_info(os.path.join(model_dir, "model.json"))["training"]
    assert training["freeze_early"] is False and training["mixup"] == 0.4
    assert training["trivial_augment"] is False  # auto: off from random weights


def test_mixup_of_identical_pairs_is_the_plain_loss():
    import argparse
    from oncolens.train.runtime import make_runtime
    from oncolens.train.trainer import _mixed_loss
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    images = torch.randn(1, 3, 2, 2).repeat(4, 1, 1, 1)
    target = torch.tensor([1, 1, 1, 1])
    runtime = make_runtime(None, "fp32", "off")
    loss_fn = torch.nn.CrossEntropyLoss()
    plain = _mixed_loss(net, images, target, loss_fn, runtime, 0.0, np.random.default_rng(0))
    mixed = _mixed_loss(net, images, target, loss_fn, runtime, 0.4, np.random.default_rng(0))
    assert torch.allclose(plain, mixed)
    images = torch.randn(4, 3, 2, 2)
    other = torch.tensor([0, 1, 2, 0])
    got = _mixed_loss(net, images, other, loss_fn, runtime, 0.4, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    lam = float(rng.beta(0.4, 0.4))
    perm = torch.as_tensor(rng.permutation(4))
    logits = net(images * lam + images[perm] * (1 - lam))
    want = lam * loss_fn(logits, other) + (1 - lam) * loss_fn(logits, other[perm])
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(4))
    assert torch.allclose(got, want)


def _write(path, rgb):
    import cv2
    cv2.imwrite(str(path), rgb[..., ::-1])
    return (str(path), 0)


def test_orientation_guess_grey_scans_against_colour_slides(tmp_path):
    from oncolens.train.data import looks_greyscale
    rng = np.random.default_rng(0)
    grey = []
    for i in range(6):
        img = np.repeat(rng.integers(0, 255, (40, 50, 1), dtype=np.uint8), 3, axis=2)
        img[:2, :10] = (255, 255, 0)  # a yellow caliper mark does not make it colour
        grey.append(_write(tmp_path / "g{}.png".format(i), img))
    colour = [_write(tmp_path / "c{}.png".format(i),
                     rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for i in range(6)]
    assert looks_greyscale(grey)
    assert not looks_greyscale(colour)
    assert not looks_greyscale(grey[:4] + colour[:2])


def test_fixed_orientation_keeps_up_up():
    import argparse
    from oncolens.appliance.preprocess import Preprocessor, imagenet_preprocess
    from oncolens.train.augment import TrainAugment
    from oncolens.train.recipe import augment_options
    ramp = np.repeat(np.linspace(0, 255, 64).astype(np.uint8)[:, None], 64, axis=1)
    rgb = np.repeat(ramp[..., None], 3, axis=2)  # dark at the top, bright at the bottom
    pre = Preprocessor(imagenet_preprocess(32), (3, 32, 32))
    flipped = {}
    for orientation in ("fixed", "free"):
        args = argparse.Namespace(no_augment=False, orientation=orientation, crop_scale=0.5,
                                  no_rot90=False, colour_jitter=0.0, stain_jitter=0.0,
                                  trivial_augment=False)
        augment = TrainAugment(pre, 0, augment_options(args))
        outs = [augment(rgb) for _ in range(40)]
        flipped[orientation] = sum(o[0, :16].mean() > o[0, 16:].mean() for o in outs)
    assert flipped["fixed"] == 0
    assert flipped["free"] > 5


def test_speed_tool_measures_the_frozen_fine_tuning_step(capsys):
    """`python -m oncolens.train.speed --freeze-early` runs and says the early layers froze."""
    import torch
    from oncolens.train import speed
    from oncolens.appliance.archs import build_model
    from oncolens.train.freeze import freeze_early_layers
    assert speed.main(["--arch", "simple-cnn", "--resolution", "32", "-b", "2", "--steps", "1",
                       "--modes", "fp32", "--freeze-early"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "early layers frozen" in line
    assert float(line.split()[-2]) > 0
    torch.manual_seed(0)
    model = build_model("simple-cnn", 3)
    assert freeze_early_layers(model, 32) > 0
    assert any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("argv, says", [
    # an 'fp16' mode was timed as fp32 and printed as an fp16 figure
    (["--modes", "fp32,fp16"], "--modes: unknown mode 'fp16'"),
    (["--modes", "fp32,"], "--modes: unknown mode ''"),
    (["--steps", "0"], "--steps: expected 1 or more, got 0"),  # was a NameError traceback
    (["-b", "0"], "-b/--batch-size: expected 1 or more, got 0"),
])
def test_speed_tool_refuses_what_it_would_not_measure_as_named(capsys, argv, says):
    from oncolens.train import speed
    code = speed.main(["--arch", "simple-cnn", "--resolution", "32", "--steps", "1"] + argv)
    captured = capsys.readouterr()
    assert code == 2 and says in captured.err, captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "images/s" not in captured.out


@pytest.mark.parametrize("arch,head", [("resnet18", "fc"), ("efficientnet_lite0", "_fc")])
def test_layer_wise_rates_scale_everything_but_the_head(arch, head):
    import argparse
    from oncolens.appliance.archs import build_model
    from oncolens.train.freeze import head_parameters
    from oncolens.train.recipe import make_optimizer, set_lr
    net = build_model(arch, 3)
    found = head_parameters(net, 64)
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[id(p)] for p in found) == [head + ".bias", head + ".weight"]
    args = argparse.Namespace(optimizer="adamw", lr=1e-3, weight_decay=0.05, body_lr_ratio=0.1)
    opt = make_optimizer(args, net, found)
    set_lr(opt, 2e-3)
    rates = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups
             for p in g["params"]}
    assert rates[head + ".weight"] == (2e-3, 0.05) and rates[head + ".bias"] == (2e-3, 0.0)
    body = [n for n in rates if not n.startswith(head + ".")]
    assert body and all(rates[n][0] == pytest.approx(2e-4) for n in body)
    assert opt.param_groups[0]["lr"] == 2e-3  # the head first: history logs the scheduled rate
    args.body_lr_ratio = 1.0  # one rate: the two groups of before, decay first
    opt = make_optimizer(args, net, found)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_body_lr_ratio_slows_the_body_in_training(tmp_path, tiny_data):
    from oncolens.appliance.archs import build_model
    from oncolens.appliance.bundle import read_model_info
    torch.manual_seed(0)
    start = build_model("resnet18", 1000).state_dict()
    path = str(tmp_path / "w.pth")
    torch.save(start, path)
    moved = {}
    for ratio in ("1", "0.001"):
        model_dir = str(tmp_path / ratio)
        code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                                  "--weights", path, "--resolution", 32, "-b", 6, "-j", 0,
                                  "--seed", 0, "--ema-epochs", 0, "--lr", "0.01",
                                  "--body-lr-ratio", ratio])
        assert code == 0, err
        saved = _load(os.path.join(model_dir, "checkpoint.pth.tar"))["state_dict"]
        moved[ratio] = {k: float((saved[k] - start[k]).abs().max())
                        for k in ("layer4.1.conv2.weight", "layer3.0.conv1.weight")}
        with open(os.path.join(model_dir, "history.csv")) as fh:
            moved[ratio]["lr"] = [row.split(",")[1] for row in fh.read().splitlines()[1:]]
        training = read_model_info(os.path.join(model_dir, "model.json"))["training"]
        assert training["body_lr_ratio"] == float(ratio)
    for key in ("layer4.1.conv2.weight", "layer3.0.conv1.weight"):
        assert moved["0.001"][key] < moved["1"][key] / 50.0, moved
    assert moved["0.001"]["lr"] == moved["1"]["lr"]  # history: the head's, scheduled rate
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "0.001"),
                              "--epochs", 3, "--resolution", 32, "-b", 6, "-j", 0,
                              "--resume", str(tmp_path / "0.001" / "checkpoint.pth.tar")])
    assert code != 0 and "--body-lr-ratio 0.001" in err and "resume it the same way" in err
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "z"),
                              "--body-lr-ratio", "0"])
    assert code != 0 and "--body-lr-ratio: expected a positive" in err


def test_head_epochs_train_the_head_alone_first(tmp_path, tiny_data, caplog):
    import logging
    from oncolens.appliance.archs import build_model
    from oncolens.appliance.bundle import read_model_info
    caplog.set_level(logging.INFO)
    torch.manual_seed(0)
    start = build_model("resnet18", 1000).state_dict()
    path = str(tmp_path / "w.pth")
    torch.save(start, path)
    model_dir = str(tmp_path / "m")
    flags = ["--resolution", 32, "-b", 6, "-j", 0, "--seed", 0, "--ema-epochs", 0,
             "--lr", "0.01", "--head-epochs", 1, "--freeze-early", "off"]
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--weights", path] + flags)
    assert code == 0, err
    assert "the classifier head alone until epoch 1" in caplog.text
    ckpt = _load(os.path.join(model_dir, "checkpoint.pth.tar"))
    first = ckpt["state_dict"]
    assert torch.equal(first["conv1.weight"], start["conv1.weight"])
    assert torch.equal(first["layer4.1.conv2.weight"], start["layer4.1.conv2.weight"])
    # the optimiser stepped the head's two tensors and nothing else
    assert sorted(v["exp_avg"].shape for v in ckpt["optimizer"]["state"].values()) == \
        sorted([first["fc.weight"].shape, first["fc.bias"].shape])
    assert read_model_info(os.path.join(model_dir, "model.json"))["training"]["head_epochs"] == 1
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 2,
                              "--resume", os.path.join(model_dir, "checkpoint.pth.tar")] + flags)
    assert code == 0, err
    assert "epoch 2: every layer trains from here on" in caplog.text
    ckpt = _load(os.path.join(model_dir, "checkpoint.pth.tar"))
    second = ckpt["state_dict"]
    assert len(ckpt["optimizer"]["state"]) == len(list(build_model("resnet18", 3).parameters()))
    for key in ("conv1.weight", "layer4.1.conv2.weight"):
        assert float((second[key] - first[key]).abs().max()) > 0, key
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "z"),
                              "--head-epochs", "-1"])
    assert code != 0 and "--head-epochs: expected 0 or more" in err
