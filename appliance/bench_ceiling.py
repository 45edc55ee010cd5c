"""The runtime's own best: OpenVINO's THROUGHPUT mode (several streams, asynchronous
requests kept in flight), as its ``benchmark_app`` runs a model.  ``oncolens bench`` measures
it beside its own runs so "within 85% of the fastest CPU runtime" is checked against the
fastest way the runtime itself knows, not only against our own calls.
"""
import logging
import time

from oncolens.appliance.bench_measure import MIN_CALLS

log = logging.getLogger(__name__)


def openvino_throughput(bundle, batch, min_seconds=3.0, threads=None, precision="fp32"):
    """Network-only images/s of OpenVINO THROUGHPUT mode on ``bundle``'s ONNX at ``batch``'s
    shape, computing in ``precision`` as the run it is the ceiling of does, or None when
    OpenVINO is not installed.  At least MIN_CALLS requests are timed, as in every other
    timed loop: with ``min_seconds`` 0 none was, and 0.0 images/s went out as a figure."""
    from oncolens.appliance.backends.openvino import (import_openvino, precision_config,
                                                      shared_core)
    ov = import_openvino()
    if ov is None:
        return None
    core = shared_core(ov)
    model = core.read_model(bundle.model_path or bundle.onnx_path)
    model.reshape({bundle.input_name: list(batch.shape)})
    config = dict(precision_config(core, precision), PERFORMANCE_HINT="THROUGHPUT")
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(model, "CPU", config)
    requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, max(1, requests))
    done = [0]

    def finished(request, userdata):
        done[0] += 1

    queue.set_callback(finished)
    inputs = {bundle.input_name: batch}
    for _ in range(2 * requests):  # warm-up
        queue.start_async(inputs)
    queue.wait_all()
    done[0] = 0
    calls = 0
    started = time.perf_counter()
    while calls < MIN_CALLS or time.perf_counter() - started < min_seconds:
        queue.start_async(inputs)
        calls += 1
    queue.wait_all()
    wall = time.perf_counter() - started
    return {"runtime": "openvino THROUGHPUT hint, {} async requests".format(requests),
            "batch_size": int(batch.shape[0]), "network_ips": done[0] * batch.shape[0] / wall,
            "calls": done[0]}
