"""Training throughput of fp32, fp32 + channels_last and bf16 autocast on this machine.

    python -m oncolens.train.speed --arch resnet18 --resolution 224 --batch-size 32

Synthetic batches, forward + backward + AdamW step; prints images/s per mode.  A
measurement tool for docs/TRAINING.md, not part of training.
"""
import time

from oncolens.appliance.benchstats import cpu_model
from oncolens.appliance.cliutil import OneLineParser, cli_entry, normalize_flags
from oncolens.appliance.errors import UsageError

# fp32 or bf16 autocast, each with or without channels_last (+cl)
MODES = ("fp32", "fp32+cl", "bf16", "bf16+cl")


def build_parser():
    p = OneLineParser(prog="python -m oncolens.train.speed",
                                description="Measure training images/s per precision mode.")
    p.add_argument("--arch", default="resnet18", help="network (resnet18)")
    p.add_argument("--resolution", type=int, default=224, help="input size in pixels (224)")
    p.add_argument("-b", "--batch-size", type=int, default=32, help="images per step (32)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode (3)")
    p.add_argument("--modes", default="fp32,fp32+cl,bf16+cl",
                   help="comma list of fp32, fp32+cl, bf16, bf16+cl; +cl: channels_last, "
                        "bf16: bf16 autocast (fp32,fp32+cl,bf16+cl)")
    p.add_argument("--freeze-early", action="store_true",
                   help="freeze the layers at 1/2 and 1/4 of the input resolution, as "
                        "training from pretrained weights does (default: all layers train)")
    return p


def check_args(args):
    """Every mode one that measure() runs as named (another name was timed as fp32 and
    printed under its own name: an 'fp16' line was an fp32 figure), and counts of 1 or more
    (--steps 0 ended in a traceback)."""
    for flag, value in (("--resolution", args.resolution), ("-b/--batch-size", args.batch_size),
                        ("--steps", args.steps)):
        if value < 1:
            raise UsageError("{}: expected 1 or more, got {}".format(flag, value))
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise UsageError("--modes: unknown mode '{}' (expected a comma list of: {})".format(
            unknown[0], ", ".join(MODES)))
    return modes


def measure(arch, resolution, batch, mode, steps, freeze_early=False):
    import torch
    from oncolens.appliance.archs import build_model
    torch.manual_seed(0)
    model = build_model(arch, 3)
    if freeze_early:
        from oncolens.train.freeze import freeze_early_layers
        freeze_early_layers(model, resolution)
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 3, (batch,))
    if mode.endswith("+cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], 1e-3)
    model.train()
    for i in range(steps + 1):
        if i == 1:
            start = time.time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.startswith("bf16")):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.time() - start)


@cli_entry("oncolens.train.speed")
def main(argv):
    args = build_parser().parse_args(normalize_flags(argv))
    modes = check_args(args)
    import os
    import torch
    from oncolens.train.runtime import cpu_bf16_supported
    print("cpu: {} ({} threads), torch {}, native bf16: {}, load average {}".format(
        cpu_model(), torch.get_num_threads(), torch.__version__, cpu_bf16_supported(),
        " ".join("{:.1f}".format(v) for v in os.getloadavg())))
    for mode in modes:
        ips = measure(args.arch, args.resolution, args.batch_size, mode, args.steps,
                      args.freeze_early)
        print("{} {}px batch {}{} {:8s} {:6.1f} images/s".format(
            args.arch, args.resolution, args.batch_size,
            " early layers frozen" if args.freeze_early else "", mode, ips), flush=True)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
