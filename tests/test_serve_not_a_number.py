"""serve with a model whose output is not a number (NaN: weights a diverged training run
left, an FP16 overflow in an engine) answered 200 with label 'benign' (argmax of NaN is the
first class) and confidence NaN, in JSON with NaN in it, which is not JSON. It answers 500
inference_failed now, saying why, counted and audited."""
import json

from serve_util import metric, read, request, running, sample_image


def test_serve_answers_500_inference_failed_and_audits_it(nan_bundle, tiny_data, tmp_path):
    from oncolens.appliance.classifier import Classifier
    audit = str(tmp_path / "audit.jsonl")
    with Classifier.open(nan_bundle, backend="onnxruntime") as clf:
        with running(clf, audit_log=audit) as (url, _):
            body = read(sample_image(tiny_data))
            reply = request(url, "/classify", "POST", body, headers={"X-Request-Id": "nan-1"})
            annotated = request(url, "/classify?annotated=1", "POST", body)
            text = request(url, "/metrics").body.decode("utf-8")
    for answer in (reply, annotated):
        assert answer.status == 500, answer
        error = json.loads(answer.body.decode("utf-8"))["error"]  # JSON: no NaN in it
        assert error["code"] == "inference_failed"
        assert "not a number" in error["message"]
    assert metric(text, "oncolens_classify_errors_total", reason="inference") == 2
    with open(audit) as fh:
        lines = [json.loads(line) for line in fh]
    assert [(line["status"], line["label"], line["confidence"]) for line in lines] == \
        [(500, None, None)] * 2
    assert lines[0]["request_id"] == "nan-1" and lines[0]["input_sha256"]
