"""--arch: an unknown or wrongly cased name lists the valid ones; a network that cannot take
--resolution is one line before anything is written; Inception v3 and GoogLeNet train (their
auxiliary outputs used to crash the loss)."""
import os

import pytest

from conftest import run_cli

FAST = ["-b", 6, "-j", 0, "--seed", 3, "--no-pretrained", "--epochs", 1]


def _refused(code, err, model_dir):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not os.path.exists(model_dir)


def test_unknown_arch_lists_the_valid_ones(tiny_data, tmp_path):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--arch", "ResNet",
                              "--resolution", 32] + FAST)
    _refused(code, err, model_dir)
    assert "--arch ResNet: unknown architecture (did you mean resnet" in err
    for name in ("resnet18", "efficientnet_lite0", "simple-cnn", "mobilenet_v3_small"):
        assert name in err


def test_a_size_the_network_cannot_take(tiny_data, tmp_path):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--arch",
                              "inception_v3", "--resolution", 64] + FAST)
    _refused(code, err, model_dir)
    assert "--arch inception_v3 cannot take --resolution 64" in err


def test_a_network_the_nano_could_not_run_is_refused_before_training(tiny_data, tmp_path):
    """A ViT's attention exports only at ONNX opset 14+, past TensorRT 8.2's 13."""
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--arch", "vit_b_16",
                              "--resolution", 224] + FAST)
    _refused(code, err, model_dir)
    assert "--arch vit_b_16: its attention layers export to ONNX only at opset 14" in err


@pytest.mark.parametrize("arch,size", [("inception_v3", 96), ("googlenet", 64)])
def test_networks_with_auxiliary_heads_give_one_tensor(arch, size):
    import torch
    from oncolens.appliance.archs import build_model
    model = build_model(arch, 3).train()
    out = model(torch.zeros(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 3)
    assert not any(k.startswith("aux") for k in model.state_dict())


def test_check_input_size_refuses_other_outputs():
    import torch
    from oncolens.appliance.errors import UsageError
    from oncolens.train.choices import check_input_size

    class Pair(torch.nn.Module):
        def forward(self, x):
            return x.mean(), x.sum()

    with pytest.raises(UsageError, match="not one row of 3 class scores"):
        check_input_size(Pair(), "pair", 32, 3)


def test_a_network_that_exports_only_at_a_later_opset_is_warned_about_at_start(tmp_path,
                                                                                 caplog):
    """maxvit_t trains, but its export needs --opset 12 (the default is 11): one warning
    line when training starts (here before the missing data is refused), saying what is
    known of the Nano and nothing more."""
    import logging
    caplog.set_level(logging.WARNING)
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", str(tmp_path / "no-data"), "--model-dir", model_dir,
                              "--arch", "maxvit_t", "--resolution", 224] + FAST)
    assert code != 0 and not os.path.exists(model_dir)
    said = [r.getMessage() for r in caplog.records if "maxvit_t" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    assert "--opset 12" in said[0] and "oncolens export onnx --opset 12" in said[0]
    assert "TensorRT 8.2" in said[0] and "not been" in said[0]  # parses it; untested there
    caplog.clear()
    run_cli(["train", str(tmp_path / "no-data"), "--model-dir", model_dir, "--arch",
             "resnet18", "--resolution", 32] + FAST)
    assert "--opset" not in caplog.text
