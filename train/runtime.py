"""Where and how the arithmetic runs: device, bf16/fp16 autocast, channels_last, threads."""
import contextlib
import logging

from oncolens.appliance.errors import UsageError

log = logging.getLogger(__name__)


def cpu_bf16_supported():
    """True where oneDNN can run bf16 fast (AVX512-BF16 or AMX); False on AVX2-only CPUs."""
    import torch
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
        return " avx512_bf16" in flags or " amx_bf16" in flags
    except (IOError, OSError):
        return False


class Runtime(object):
    """device, autocast dtype (None for fp32), channels_last, and a GradScaler for fp16."""

    def __init__(self, device, amp_dtype, channels_last):
        import torch
        self.device = device
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.scaler = None
        if device.type == "cuda" and amp_dtype == torch.float16:
            self.scaler = torch.cuda.amp.GradScaler()

    def describe(self):
        dtype = {None: "fp32"}.get(self.amp_dtype, str(self.amp_dtype).replace("torch.", ""))
        return "{} {}{}".format(self.device, dtype, " channels_last" if self.channels_last else "")

    def autocast(self):
        import torch
        if self.amp_dtype is None:
            return contextlib.contextmanager(lambda: (yield))()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def model(self, model):
        import torch
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def batch(self, images):
        import torch
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def scaler_state(self):
        """The fp16 GradScaler's state for the checkpoint (its scale, growth tracker), or None
        where no scaler runs (fp32, bf16, a CPU)."""
        return None if self.scaler is None else self.scaler.state_dict()

    def restore_scaler(self, state):
        """A resumed checkpoint's GradScaler ``state`` (None: it saved none, made before the
        scaler was saved or without fp16): a resume goes on at its scale instead of starting
        the scale over. Nothing where this run has no scaler."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
            return True
        return False

    def step(self, loss, optimizer):
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()


def make_runtime(gpu=None, precision="auto", channels_last="auto"):
    """Choose the device and precision: bf16 on CPUs that support it, fp16 AMP on CUDA."""
    import torch
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UsageError("--precision: expected auto, fp32, bf16 or fp16, got {!r}".format(
            precision))
    if gpu is not None:
        if not torch.cuda.is_available():
            raise UsageError("--gpu {}: no CUDA GPU is available here".format(gpu))
        device = torch.device("cuda", gpu)
        amp = {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16,
               "fp32": None}[precision]
    else:
        device = torch.device("cpu")
        if precision == "fp16":
            raise UsageError("--precision fp16 needs a GPU (--gpu N); on a CPU use bf16 or fp32")
        bf16 = cpu_bf16_supported()
        if precision == "bf16" and not bf16:
            log.warning("--precision bf16: this CPU has no native bf16 (AVX512-BF16/AMX); "
                        "it runs, but slower than fp32")
        amp = torch.bfloat16 if precision == "bf16" or (precision == "auto" and bf16) else None
    if channels_last not in ("auto", "on", "off"):
        raise UsageError("--channels-last: expected auto, on or off, got {!r}".format(
            channels_last))
    return Runtime(device, amp, channels_last != "off")


def out_of_memory(exc):
    """True for the errors torch raises when a batch does not fit."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate" in text \
        or "not enough memory" in text
