"""``oncolens classify``: jetson-inference's ``imagenet`` command line.

    oncolens classify --model=models/x/resnet18.onnx --input_blob=input_0 \
        --output_blob=output_0 --labels=data/x/labels.txt data/x/test/cat out/
"""
import argparse
import logging
import sys

from oncolens.appliance.cliutil import cli_entry, normalize_flags, setup_logging
from oncolens.appliance.errors import UsageError
from oncolens.appliance.overlay import draw_lines
from oncolens.appliance.postprocess import console_line, overlay_text

log = logging.getLogger("oncolens.classify")


def build_parser():
    p = argparse.ArgumentParser(
        prog="oncolens classify",
        description="Classify images (a file, a folder or a quoted glob) and draw the class and "
                    "confidence on each; flags as jetson-inference's imagenet ('-' and '_' "
                    "are interchangeable).")
    p.add_argument("input", help="input: image file, folder or quoted glob")
    p.add_argument("output", nargs="?", default=None,
                   help="output: image file, folder (ending in /) or pattern like out_%%i.jpg")
    p.add_argument("--model", help="model folder, .onnx, engine or checkpoint")
    p.add_argument("--network", help="a model folder name under --models-root (models/NAME/)")
    p.add_argument("--models-root", default="models", help="where --network looks (models)")
    p.add_argument("--labels", help="labels file (optional when the model has a model.json)")
    p.add_argument("--input-blob", help="input tensor name (default from model.json, else input_0)")
    p.add_argument("--output-blob", help="output tensor name (default from model.json, else output_0)")
    p.add_argument("--topK", "--topk", dest="topk", type=int, default=1,
                   help="how many classes to show per image (1)")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="minimum confidence of the 2nd..K-th class shown (0.01)")
    p.add_argument("--backend", default="auto", help="auto or onnxruntime")
    p.add_argument("--headless", action="store_true", help="no display window")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def resolve_model(args):
    if args.model:
        return args.model
    if args.network:
        import os
        return os.path.join(args.models_root, args.network)
    raise UsageError("--model: required (a model folder, .onnx, engine or checkpoint), or "
                     "--network=NAME for models/NAME/")


@cli_entry("oncolens classify")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    setup_logging(args.log_level)
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.sinks import open_sink
    from oncolens.appliance.sources import open_source

    model = resolve_model(args)
    source = open_source(args.input)
    clf = Classifier.open(model, labels=args.labels, input_blob=args.input_blob,
                          output_blob=args.output_blob, backend=args.backend, top=args.topk,
                          threshold=args.threshold)
    sink = open_sink(args.output, overwrite=args.overwrite)
    failed = 0
    with clf:
        for frame in source:
            if frame.error:
                log.error("%s", frame.error)
                failed += 1
                continue
            result = clf.infer_images([frame.image])
            preds = clf.predictions(result.probs[0])
            for pred in preds:
                print(console_line(pred))
            if sink is not None:
                where = sink.write(frame, draw_lines(frame.image, [overlay_text(p) for p in preds]))
                log.debug("%s -> %s", frame.origin, where)
            sys.stdout.flush()
    if sink is not None:
        sink.close()
    return 1 if failed else 0
