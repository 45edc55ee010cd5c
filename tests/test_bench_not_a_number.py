"""bench with a model whose output is not a number (NaN: weights a diverged training run
left): the NaN was read as class 0, so the fp32 reference "predicted 'benign' for every
image" (a warning blaming the agreement images) and a run agreed with it 100%. The outputs
are now said to be not numbers, under the table and in --json, and agree with nothing."""
import io
import json
import logging
import os

from conftest import run_cli


def test_bench_says_the_outputs_are_not_numbers(nan_bundle, tiny_data, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    out = str(tmp_path / "bench.json")
    code, stdout, err = run_cli(["bench", "--model", nan_bundle, "--images",
                                 os.path.join(tiny_data, "test", "benign"), "--backends",
                                 "onnxruntime", "--precisions", "fp32", "--batch-sizes", "1",
                                 "--min-seconds", "0", "--warmup", "0", "--no-baseline",
                                 "--json", out])
    assert code == 0, err
    with io.open(out, encoding="utf-8") as fh:
        result = json.load(fh)
    images = result["agreement_images"]
    assert images["reference_single_class"] is None, images
    assert images["reference_not_a_number"] == 3
    run = result["runs"][0]
    assert run["agreement_vs_fp32"] is None and run["agreement_not_a_number"] == 3
    assert "for every one of" not in caplog.text
    assert "fp32 reference's output is not a number (NaN or infinity) for 3" in caplog.text
    assert ("the fp32 reference's output is not a number (NaN or infinity) for 3 of 3 "
            "agreement images") in stdout, stdout
    assert ("onnxruntime fp32's output is not a number (NaN or infinity) for 3 agreement "
            "images: counted as disagreeing with fp32") in stdout, stdout


def test_a_run_that_is_not_a_number_agrees_with_nothing():
    from oncolens.appliance.bench_measure import NOT_A_NUMBER, agreement, not_numbers
    ref = [0, 1, -1, NOT_A_NUMBER]
    pred = [NOT_A_NUMBER, 1, -1, NOT_A_NUMBER]
    assert agreement(pred, ref) == 0.5 and not_numbers(pred) == 2


def test_the_naive_baseline_reads_no_class_from_an_output_that_is_not_a_number(nan_bundle,
                                                                              tiny_data):
    """The naive PyTorch loop took the argmax of a NaN output (class 0): its agreement with
    a reference predicting class 0 was 100%. Now such an output has no class."""
    from oncolens.appliance.bench_measure import NOT_A_NUMBER, agreement
    from oncolens.appliance.bench_naive import NaiveTorch
    from oncolens.appliance.bundle import load_bundle
    folder = os.path.join(tiny_data, "test", "benign")
    files = [(os.path.join(folder, name), None) for name in sorted(os.listdir(folder))]
    pred = NaiveTorch(load_bundle(nan_bundle)).top1(files)
    assert pred == [NOT_A_NUMBER] * len(files)
    assert agreement(pred, [0] * len(files)) == 0.0


def test_bench_says_the_baselines_outputs_are_not_numbers(nan_bundle, tiny_data, tmp_path):
    out = str(tmp_path / "bench.json")
    code, stdout, err = run_cli(["bench", "--model", nan_bundle, "--images",
                                 os.path.join(tiny_data, "test", "benign"), "--backends",
                                 "onnxruntime", "--precisions", "fp32", "--batch-sizes", "1",
                                 "--min-seconds", "0", "--warmup", "0", "--json", out])
    assert code == 0, err
    with io.open(out, encoding="utf-8") as fh:
        base = json.load(fh)["baseline"]
    assert base["agreement_vs_fp32"] is None and base["agreement_not_a_number"] == 3, base
    assert ("torch-eager fp32 (baseline)'s output is not a number (NaN or infinity) for 3 "
            "agreement images: counted as disagreeing with fp32") in stdout, stdout
