"""``oncolens demo``: the whole pipeline end to end, and --overwrite only on a demo's folder."""
import os

from conftest import run_cli

SMALL = ["--epochs", 1, "--per-class", 6, "--size", 48, "--resolution", 32]


def test_demo_runs_end_to_end_and_overwrite_replaces_only_a_demo(tmp_path):
    out = str(tmp_path / "demo")
    code, stdout, err = run_cli(["demo", "--out", out] + SMALL)
    assert code == 0, err
    assert "test accuracy" in stdout.lower()
    annotated = os.path.join(out, "annotated")
    written = [f for _, _, files in os.walk(annotated) for f in files]
    assert len(written) == 3 * 2  # the test split: a third of 6 per class
    with open(os.path.join(out, "model", "model.json")) as fh:
        assert '"onnx"' in fh.read()
    code, stdout, err = run_cli(["demo", "--out", out] + SMALL)
    assert code != 0 and "--overwrite" in err
    code, stdout, err = run_cli(["demo", "--out", out, "--overwrite"] + SMALL)
    assert code == 0, err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text(u"keep me")
    code, stdout, err = run_cli(["demo", "--out", str(mine), "--overwrite"] + SMALL)
    assert code != 0 and "not an earlier demo's folder" in err
    assert (mine / "notes.txt").read_text() == u"keep me"
