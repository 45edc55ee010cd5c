"""Flags out of range are one line naming the flag, before anything is written (they used
to end in tracebacks, or ran with something else than what was asked)."""
import os

import pytest

from conftest import FAST_TRAIN, run_cli

FAST = FAST_TRAIN + ["--epochs", 1]

CASES = [
    (["--resolution", 0], "--resolution: expected a positive number of pixels, got 0"),
    (["--resolution", -5], "--resolution"),
    (["-j", -1], "-j/--workers: expected 0 or more"),
    (["--lr", -1], "--lr: expected 0 or more"),
    (["--lr", "nan"], "--lr"),
    (["--label-smoothing", 2], "--label-smoothing: expected 0 <= smoothing < 1"),
    (["--crop-scale", 2], "--crop-scale: expected a fraction of the image area"),
    (["--momentum", -1], "--momentum"),
    (["--threads", -2], "--threads"),
    (["--patience", -1], "--patience"),
    (["--time-limit", -1], "--time-limit"),
    (["--start-epoch", -2], "--start-epoch"),
    (["--start-epoch", 5, "--epochs", 3], "--start-epoch 5 is not before --epochs 3"),
    (["-b", 0], "-b/--batch-size: expected 1 or more"),
    (["-b", 8, "--accum-steps", 3], "-b/--batch-size 8 is not a multiple of --accum-steps 3"),
    (["--seed", -1], "--seed"),
    (["--seed", 2 ** 32], "--seed"),
    (["-e"], "-e/--evaluate needs --resume CHECKPOINT"),
]


@pytest.mark.parametrize("extra,message", CASES, ids=[" ".join(map(str, c[0])) for c in CASES])
def test_bad_flag_is_one_line_and_writes_nothing(tiny_data, tmp_path, extra, message):
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir] + FAST + extra)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not os.path.exists(model_dir)


def test_resume_with_no_epoch_left_says_so(tiny_data, tmp_path, caplog):
    """Allowed (it redoes the bundle, e.g. to add or take out --calibrate), but said."""
    import logging
    caplog.set_level(logging.INFO)
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir] + FAST)
    assert code == 0, err
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--resume",
                              os.path.join(model_dir, "checkpoint.pth.tar")] + FAST)
    assert code == 0, err
    assert "at epoch 1 and --epochs is 1: no epoch left to train" in caplog.text


def test_low_memory_splits_the_batch_evenly():
    from oncolens.train.flags import low_memory_accum
    assert [low_memory_accum(b) for b in (6, 8, 16, 32, 20, 13, 9)] == [1, 1, 2, 4, 4, 13, 3]


def test_print_freq_given_logs_at_info(tiny_data, tmp_path, caplog):
    import logging
    caplog.set_level(logging.INFO)
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir] + FAST)
    assert code == 0, err
    assert "epoch 1 [0/" not in caplog.text  # the default: DEBUG only
    caplog.clear()
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "p"), "-p", 1] +
                             FAST)
    assert code == 0, err
    lines = [r for r in caplog.records if "epoch 1 [" in r.getMessage()]
    assert lines and all(r.levelno == logging.INFO for r in lines)


@pytest.mark.parametrize("accum", [1, 3])
def test_print_freq_counts_batches_of_b_images_whatever_accum_steps(tiny_data, tmp_path,
                                                                    caplog, accum):
    """jetson-inference's train.py logs when ``i % print_freq == 0`` over the loader's
    batches of -b images. --accum-steps splits each such batch into micro-batches inside one
    step; they must not count as batches of their own (18 training images, -b 6: 3 batches,
    so -p 2 logs batches 0 and 2 of 3 whether or not each is split in three)."""
    import logging
    caplog.set_level(logging.INFO)
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "m"), "-p", 2,
                              "--accum-steps", accum] + FAST)
    assert code == 0, err
    lines = [r.getMessage().split(" loss ")[0] for r in caplog.records
             if r.getMessage().startswith("epoch 1 [")]
    assert lines == ["epoch 1 [0/3]", "epoch 1 [2/3]"]


def test_a_jetson_inference_sgd_line_under_adamw_is_warned_about(tiny_data, tmp_path, caplog):
    """train.py's --lr 0.1 --momentum 0.9 are SGD's: under the default AdamW the rate
    diverges and the momentum does nothing, so both are named before training starts."""
    import logging
    from oncolens.train.choices import check_optimizer
    from oncolens.train.cli import build_parser
    caplog.set_level(logging.WARNING)
    args = build_parser().parse_args([tiny_data, "--lr", "0.1", "--momentum", "0.9"])
    check_optimizer(args)
    text = caplog.text
    assert "--momentum 0.9: SGD's momentum; --optimizer adamw has none and ignores it" in text
    assert "--lr 0.1 with --optimizer adamw: a rate this high usually diverges" in text
    assert "--optimizer sgd --lr 0.1 --momentum 0.9 --wd 1e-4" in text
    caplog.clear()
    for argv in ([tiny_data, "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.8"],
                 [tiny_data]):
        args = build_parser().parse_args(argv)
        check_optimizer(args)
        assert args.momentum == (0.8 if "sgd" in argv else 0.9)
    assert caplog.text == ""


def test_batches_of_one_image(tiny_data, tmp_path):
    """-b 1 with ResNet-18 at 32 px (batch norm over one value per channel) was a ValueError
    traceback after --model-dir was made; with --accum-steps, an only step of an odd size
    ended in a micro-batch of one image and the same traceback."""
    import shutil
    fast = ["--resolution", 32, "-j", 0, "--seed", 3, "--no-pretrained", "--epochs", 1]
    model_dir = str(tmp_path / "one")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "-b", 1] + fast)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "-b/--batch-size 1" in err and "--resolution 32" in err
    assert not os.path.exists(model_dir)
    data = str(tmp_path / "odd")
    shutil.copytree(tiny_data, data)
    benign = os.path.join(data, "train", "benign")
    os.remove(os.path.join(benign, sorted(os.listdir(benign))[0]))  # 17 training images
    code, out, err = run_cli(["train", data, "--model-dir", str(tmp_path / "odd_model"),
                              "-b", 32, "--accum-steps", 2] + fast)
    assert code == 0, err
