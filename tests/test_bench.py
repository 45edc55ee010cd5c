"""``oncolens bench``: the JSON's schema, and figures that are positive and consistent.

No timed assertions: only that what is reported is complete and adds up.
"""
import io
import json
import os
import re

import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def bench_bundle(tiny_data, tmp_path_factory):
    """Like tiny_bundle, trained until its answers on val/ are not all one class: agreement
    with an fp32 reference that answers one class for everything unlocks nothing."""
    model_dir = str(tmp_path_factory.mktemp("bench_bundle") / "model")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--resolution", 32,
                              "--epochs", 3, "-b", 6, "-j", 0, "--seed", 3, "--lr", 0.001,
                              "--no-pretrained"])
    assert code == 0, err
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 0, err
    return model_dir


@pytest.fixture(scope="module")
def bench_json(bench_bundle, tiny_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench") / "bench.json")
    code, stdout, err = run_cli([
        "bench", "--model", bench_bundle, "--images", os.path.join(tiny_data, "test"),
        "--agreement-images", os.path.join(tiny_data, "val"), "--precisions", "fp32,int8",
        "--calib-images", os.path.join(tiny_data, "train"), "--calib-count", 6,
        "--batch-sizes", "1,3", "--min-seconds", 0.05, "--warmup", 1, "--json", out])
    assert code == 0, err
    assert "torch-eager (naive)" in stdout and "onnxruntime int8" in stdout
    with io.open(out, encoding="utf-8") as fh:
        result = json.load(fh)
    assert result["agreement_images"]["reference_single_class"] is None
    return result


def _openvino_installed():
    try:
        import openvino  # noqa: F401
        return True
    except ImportError:
        return False


def _check_latency(lat):
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]


def _check_shares(share):
    assert set(share) == {"decode", "preprocess", "inference", "postprocess"}
    assert all(0.0 <= v <= 1.0 for v in share.values())
    assert abs(sum(share.values()) - 1.0) < 1e-3
    assert share["inference"] > 0 and share["decode"] > 0


def test_bench_json_has_every_run(bench_json):
    backends = ["onnxruntime"] + (["openvino"] if _openvino_installed() else [])
    got = sorted((r["backend"], r["precision"], r["batch_size"]) for r in bench_json["runs"])
    want = sorted((b, p, n) for b in backends for p in ("fp32", "int8") for n in (1, 3))
    assert got == want
    if not _openvino_installed():
        assert [s["backend"] for s in bench_json["skipped"]] == ["openvino", "openvino"]
    assert bench_json["images"]["count"] == 9 and bench_json["agreement_images"]["count"] == 9
    assert len(bench_json["loadavg_start"]) == 3 and len(bench_json["loadavg_end"]) == 3
    assert bench_json["machine"]["cores"] >= 1 and bench_json["machine"]["cpu"]


def test_bench_figures_are_positive_and_consistent(bench_json):
    base = bench_json["baseline"]
    assert base["end_to_end_ips"] > 0 and base["network_ips"] >= base["end_to_end_ips"]
    _check_latency(base["latency_ms"])
    _check_shares(base["stage_share"])
    assert 0.0 <= base["agreement_vs_fp32"] <= 1.0
    one = base["single_thread"]
    assert one["end_to_end_ips"] > 0 and one["torch_threads"] == 1 and one["images"] == 9
    best_naive = max(base["end_to_end_ips"], one["end_to_end_ips"])
    for run in bench_json["runs"]:
        assert run["device"] == "cpu" and run["preprocess"] == "host"  # OpenVINO's "CPU" too
        assert run["network_ips"] > 0 and run["end_to_end_ips"] > 0
        assert run["images"] == 9
        assert run["end_to_end_ips"] == pytest.approx(run["images"] / run["seconds"], rel=0.01)
        _check_latency(run["latency_ms"])
        _check_latency(run["network_latency_ms"])
        _check_shares(run["stage_share"])
        assert 0.0 <= run["agreement_vs_fp32"] <= 1.0
        assert run["speedup_vs_baseline"] == pytest.approx(
            run["end_to_end_ips"] / base["end_to_end_ips"], rel=1e-2)
        assert run["speedup_vs_best_naive"] == pytest.approx(
            run["end_to_end_ips"] / best_naive, rel=1e-2)
        fastest = bench_json["fastest_network_ips"][run["precision"]]
        assert run["network_ips"] <= fastest + 0.01
        assert 0 < run["network_vs_fastest_runtime"] <= 1.0
    ort_fp32 = [r for r in bench_json["runs"]
                if r["backend"] == "onnxruntime" and r["precision"] == "fp32"]
    assert all(r["agreement_vs_fp32"] == 1.0 for r in ort_fp32)  # it is the reference


def test_int8_is_used_only_when_asked_and_with_its_agreement(bench_json, bench_bundle,
                                                             tiny_data, tmp_path):
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.variants import read_sidecar, variant_path
    path = variant_path(load_bundle(bench_bundle), "int8")
    recorded = read_sidecar(path)["agreement_vs_fp32"]
    run = [r for r in bench_json["runs"] if r["backend"] == "onnxruntime"
           and r["precision"] == "int8"][0]
    assert recorded["top1"] == run["agreement_vs_fp32"] and recorded["images"] == 9
    results = str(tmp_path / "int8.jsonl")
    code, _, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model", bench_bundle,
                            "--precision", "int8", "--results", results, "--no-progress"])
    assert code == 0, err
    with io.open(results, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert len(rows) == 9 and all(r["precision"] == "int8" for r in rows)
    if _openvino_installed():  # OpenVINO names what the file is, not what it was asked for
        from oncolens.appliance.backends import open_backend
        from oncolens.appliance.variants import with_model
        bundle = load_bundle(bench_bundle)
        with open_backend("openvino", with_model(bundle, path)) as backend:
            assert backend.precision == "int8"
        with open_backend("openvino", bundle, precision="int8") as backend:
            assert backend.precision == "fp32"


def test_bench_refuses_to_overwrite_and_bad_flags(bench_json, tiny_bundle, tiny_data, tmp_path):
    existing = tmp_path / "b.json"
    existing.write_text(u"{}")
    images = os.path.join(tiny_data, "test")
    for extra, message in [(["--json", str(existing)], "already exists"),
                           (["--batch-sizes", "0"], "--batch-sizes"),
                           (["--batch-sizes", "x"], "--batch-sizes"),
                           # a typo was skipped after minutes of measuring, exit 0 beside
                           # the runs that were right
                           (["--backends", "onnxruntime,openvnio"],
                            "--backends: unknown 'openvnio'"),
                           (["--precisions", "fp32,in8"], "--precisions: unknown 'in8'"),
                           (["--workers", "-1"], "--workers: expected 0 or more"),
                           (["--warmup", "-2"], "--warmup: expected 0 or more"),
                           (["--calib-count", "0"], "--calib-count: expected a positive"),
                           (["--min-seconds", "nan"], "--min-seconds: expected seconds")]:
        code, _, err = run_cli(["bench", "--model", tiny_bundle, "--images", images] + extra)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1


def test_bf16_is_openvino_only_measured_and_recorded(bench_bundle, tiny_data, tmp_path):
    """bf16 is OpenVINO computing the fp32 file in bf16: measured and recorded where the CPU
    has native bf16, skipped with its reason elsewhere, and batch runs it only once recorded."""
    ov = pytest.importorskip("openvino")
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.variants import agreement_record, read_sidecar
    model_dir = str(tmp_path / "model")
    import shutil
    shutil.copytree(bench_bundle, model_dir)  # a bundle of its own: nothing recorded yet
    test_dir = os.path.join(tiny_data, "test")
    results = str(tmp_path / "bf16.jsonl")
    batch = ["batch", test_dir, "--model", model_dir, "--precision", "bf16", "--results",
             results, "--no-progress"]
    code, _, err = run_cli(batch)
    assert code == 2 and "no measured agreement" in err and "oncolens bench" in err
    out = str(tmp_path / "bench.json")
    code, _, err = run_cli([
        "bench", "--model", model_dir, "--images", test_dir, "--agreement-images",
        os.path.join(tiny_data, "val"), "--backends", "onnxruntime,openvino",
        "--precisions", "fp32,bf16", "--batch-sizes", "1", "--min-seconds", 0.05,
        "--warmup", 1, "--no-baseline", "--json", out])
    assert code == 0, err
    with io.open(out, encoding="utf-8") as fh:
        result = json.load(fh)
    reasons = dict(((s["backend"], s["precision"]), s["reason"]) for s in result["skipped"])
    assert "only the openvino backend" in reasons[("onnxruntime", "bf16")]
    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    runs = dict(((r["backend"], r["precision"]), r) for r in result["runs"])
    recorded = read_sidecar(agreement_record(load_bundle(model_dir), "bf16"))
    if not native:
        assert "no native bf16" in reasons[("openvino", "bf16")]
        assert ("openvino", "bf16") not in runs and not recorded
        return
    run = runs[("openvino", "bf16")]
    assert run["network_ips"] > 0 and 0.0 <= run["agreement_vs_fp32"] <= 1.0
    assert run["runtime_ceiling"]["network_ips"] > 0
    assert recorded["agreement_vs_fp32"]["top1"] == run["agreement_vs_fp32"]
    assert recorded["agreement_vs_fp32"]["images"] == 9 and recorded["cpu"]
    code, _, err = run_cli(batch)
    assert code == 0, err
    with io.open(results, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert len(rows) == 9 and all(r["precision"] == "bf16" for r in rows)
    assert all(r["backend"].startswith("openvino") for r in rows)
    code, _, err = run_cli(batch + ["--backend", "onnxruntime", "--overwrite"])
    assert code == 2 and "--backend openvino only" in err


def test_bench_a_bare_folder_uses_the_onnx_input_size(tiny_bundle, tiny_data, tmp_path):
    """A jetson-inference folder (ONNX + labels.txt, 32 px input, no model.json)."""
    import shutil
    d = tmp_path / "bare"
    d.mkdir()
    for f in ("resnet18.onnx", "labels.txt"):
        shutil.copy(os.path.join(tiny_bundle, f), str(d))
    code, out, err = run_cli(["bench", "--model", str(d), "--images",
                              os.path.join(tiny_data, "test"), "--backends", "onnxruntime",
                              "--batch-sizes", "1", "--no-baseline", "--min-seconds", 0.05,
                              "--warmup", 1])
    assert code == 0, err
    assert "onnxruntime fp32" in out
    # what the rows were measured on, and how often (the table named none of it)
    counted = re.search(r"^measured: model {} \(resnet18, input 32x32\); 9 images timed "
                        r"end to end per row, 2 workers; network-only: (\d+) timed calls per "
                        r"row \(at least 0.05 s each\) after 1 warm-up call$".format(
                            re.escape(str(d))), out, re.M)
    assert counted and int(counted.group(1)) >= 5, out
    # the latency columns say they are per image, end to end (not the network's per call)
    header = out.splitlines()[0]
    assert "e2e p50 ms" in header and "e2e p99 ms" in header, header
    # with the baseline asked for: no checkpoint, so "x naive" is "-" and the table says why
    code, out, err = run_cli(["bench", "--model", str(d), "--images",
                              os.path.join(tiny_data, "test"), "--backends", "onnxruntime",
                              "--batch-sizes", "1", "--min-seconds", 0.05, "--warmup", 1])
    assert code == 0, err
    assert "skipped the naive torch loop (baseline): {}: no checkpoint".format(d) in out
    # --threads changes every figure: the JSON says which was used (it did not)
    out = str(tmp_path / "one-thread.json")
    code, _, err = run_cli(["bench", "--model", str(d), "--images",
                            os.path.join(tiny_data, "test"), "--backends", "onnxruntime",
                            "--batch-sizes", "1", "--min-seconds", 0.05, "--warmup", 1,
                            "--no-baseline", "--threads", 1, "--json", out])
    assert code == 0, err
    with io.open(out, encoding="utf-8") as fh:
        assert json.load(fh)["settings"]["threads"] == 1


def test_unreadable_images_are_skipped_named_and_counted(tiny_bundle, tiny_data, tmp_path,
                                                         caplog):
    """A bad file first in the folder (sample batch), a corrupt PNG and a GIF (the naive
    PIL loop too): the bench runs on the readable ones and names the others."""
    import shutil
    images = tmp_path / "mixed"
    shutil.copytree(os.path.join(tiny_data, "test"), str(images))
    (images / "000_bad.png").write_bytes(b"nope!")
    (images / "benign" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    shutil.copy(str(next((images / "normal").glob("*.png"))), str(images / "anim.gif"))
    out = str(tmp_path / "new" / "b.json")  # its folder is made
    code, stdout, err = run_cli(["bench", "--model", tiny_bundle, "--images", str(images),
                                 "--backends", "onnxruntime", "--batch-sizes", "1,2",
                                 "--min-seconds", 0.05, "--warmup", 1, "--json", out])
    assert code == 0, err
    with io.open(out, encoding="utf-8") as fh:
        doc = json.load(fh)
    bad = sorted(os.path.basename(f["path"]) for f in doc["unreadable"]["files"])
    assert bad == ["000_bad.png", "anim.gif", "corrupt.png"] and doc["unreadable"]["count"] == 3
    assert doc["baseline"]["images"] == 9 and doc["baseline"]["single_thread"]["images"] == 9
    assert [r["images"] for r in doc["runs"]] == [9, 9]
    assert "skipped 3 unreadable files" in stdout  # each with the reader's reason:
    assert "corrupt.png: not a decodable image" in stdout and ".gif (expected" in stdout
    warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    for name in bad:  # one warning a file, however many loops met it
        assert len([w for w in warned if name in w]) == 1


def test_a_long_list_of_unreadable_files_is_capped_with_its_reasons():
    from oncolens.appliance.bench_cli import UNREADABLE_SHOWN, unreadable_lines
    files = [{"path": "f{}.png".format(n), "reason": "f{}.png: empty file".format(n)}
             for n in range(UNREADABLE_SHOWN + 5)] + [{"path": "x.png", "reason": "no image"}]
    lines = unreadable_lines({"count": len(files), "files": files}, limit=len(files))
    assert lines[1:3] == ["  f0.png: empty file", "  f1.png: empty file"]
    assert lines[-1] == "  x.png: no image"  # a reason that does not name its file is given one
    lines = unreadable_lines({"count": len(files), "files": files})
    assert len(lines) == 1 + UNREADABLE_SHOWN + 1 and "... and 6 more" in lines[-1]


def test_no_readable_image_and_unusable_json_are_one_line_before_measuring(tiny_bundle,
                                                                          tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"nope")
    (bad / "b.jpg").write_bytes(b"")
    code, _, err = run_cli(["bench", "--model", tiny_bundle, "--images", str(bad),
                            "--backends", "onnxruntime", "--no-baseline"])
    assert code == 1 and "--images: none of the 2 image files could be read; the first: {}: " \
        "not a decodable image".format(bad / "a.png") in err
    assert "a.png" in err and len(err.strip().splitlines()) == 1
    blocker = tmp_path / "afile"
    blocker.write_text(u"x")
    code, out, err = run_cli(["bench", "--model", tiny_bundle, "--images", str(bad),
                              "--json", str(blocker / "b.json")])
    assert code == 2 and "--json" in err and "is a file, not a folder" in err
    assert len(err.strip().splitlines()) == 1 and not out


@pytest.mark.parametrize("flags, reduce_range", [(["avx2", "fma"], True), ([], True),
                                                 (["avx2", "avx512f", "avx512_vnni"], False),
                                                 (["avx2", "avx_vnni"], False),
                                                 (["amx_int8", "amx_tile"], False)])
def test_int8_reduce_range_only_without_vnni_or_amx(flags, reduce_range):
    from oncolens.appliance.variants import int8_reduce_range
    assert int8_reduce_range(flags)[0] is reduce_range


def test_int8_copy_uses_and_records_reduce_range_of_this_cpu(tiny_bundle, tiny_data, tmp_path,
                                                             monkeypatch, caplog):
    import shutil
    import onnxruntime.quantization as ortq
    from oncolens.appliance import benchstats, variants
    from oncolens.appliance.bundle import load_bundle
    model_dir = str(tmp_path / "m")
    shutil.copytree(tiny_bundle, model_dir, ignore=shutil.ignore_patterns("variants"))
    seen = []
    real = ortq.quantize_static

    def spy(*args, **kwargs):
        seen.append(kwargs["reduce_range"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ortq, "quantize_static", spy)
    for flags, expected in ((["avx2", "avx512_vnni"], False), (["avx2"], True)):
        monkeypatch.setattr(benchstats, "cpu_flags", lambda: flags)
        copy = variants.quantize_int8(load_bundle(model_dir), os.path.join(tiny_data, "train"),
                                      count=3, overwrite=True)
        calibration = variants.read_sidecar(copy.model_path)["calibration"]
        assert seen[-1] is expected and calibration["reduce_range"] is expected
        assert ("reduce_range" in calibration["method"]) is expected
    # a copy made with 8-bit weights, run on a CPU without VNNI or AMX: a warning
    variants.write_sidecar(copy.model_path, {"calibration": dict(calibration, reduce_range=False),
                                             "agreement_vs_fp32": {"top1": 1.0, "images": 9,
                                                                   "dir": tiny_data}})
    variants.for_precision(load_bundle(model_dir), "int8")
    assert "8-bit weights on a CPU with VNNI or AMX" in caplog.text


def test_agreement_with_a_one_class_reference_unlocks_nothing(tiny_bundle, tiny_data, tmp_path,
                                                              caplog):
    import shutil
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.variants import read_sidecar, variant_path
    model_dir = str(tmp_path / "m")
    shutil.copytree(tiny_bundle, model_dir, ignore=shutil.ignore_patterns("variants"))
    same = tmp_path / "same" / "benign"  # the same image twice: one class in every answer
    same.mkdir(parents=True)
    first = sorted(os.listdir(os.path.join(tiny_data, "val", "benign")))[0]
    for name in ("a.png", "b.png"):
        shutil.copy(os.path.join(tiny_data, "val", "benign", first), str(same / name))
    out = str(tmp_path / "b.json")
    code, _, err = run_cli([
        "bench", "--model", model_dir, "--images", os.path.join(tiny_data, "test"),
        "--agreement-images", str(same.parent), "--precisions", "fp32,int8",
        "--backends", "onnxruntime", "--no-baseline",
        "--calib-images", os.path.join(tiny_data, "train"), "--calib-count", 3,
        "--batch-sizes", "1", "--min-seconds", 0.01, "--warmup", 1, "--json", out])
    assert code == 0, err
    with io.open(out, encoding="utf-8") as fh:
        only = json.load(fh)["agreement_images"]["reference_single_class"]
    assert only in ("benign", "malignant", "normal")
    warnings = [r.getMessage() for r in caplog.records if "no measure" in r.getMessage()]
    assert len(warnings) == 1 and "predicts '{}' for every one of the 2".format(only) \
        in warnings[0]
    recorded = read_sidecar(variant_path(load_bundle(model_dir), "int8"))["agreement_vs_fp32"]
    assert recorded["reference_single_class"] == only and recorded["images"] == 2
    code, out_text, err = run_cli(["batch", os.path.join(tiny_data, "test"), "--model",
                                   model_dir, "--precision", "int8", "--results",
                                   str(tmp_path / "r.jsonl"), "--no-progress"])
    assert code == 2 and "--precision int8" in err and "no measure" in err
    assert len(err.strip().splitlines()) == 1


def test_a_gpu_run_names_its_gpu_beside_the_cpu(bench_json, monkeypatch):
    """--device cuda figures went out under the CPU's name alone ("machine: AMD EPYC (2
    cores)"): the JSON and the table now name the GPU; on the CPU the field is null."""
    import copy

    import torch

    from oncolens.appliance import benchstats
    from oncolens.appliance.bench_cli import table
    assert "gpu" in bench_json["machine"] and bench_json["machine"]["gpu"] is None
    assert benchstats.gpu_info("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 #{}".format(i))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    gpu = benchstats.gpu_info("cuda:1")
    assert gpu == {"device": "cuda:1", "name": "NVIDIA H100 #1", "cuda": "13.0"}
    result = copy.deepcopy(bench_json)
    result["machine"]["gpu"] = gpu
    assert ", GPU NVIDIA H100 #1 (CUDA 13.0), load average" in table(result)

