"""The description of this machine and its libraries, stored as columns beside every benchmark row and
printed by `rmt-lab info`."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often only 'x86_64')."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict[str, str | int]:
    """CPU model, core and torch thread counts, GPU, python / torch / transformers versions."""
    import torch
    import transformers

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def device_name(device: torch.device) -> str:
    """What computed on `device`: the GPU's name for a CUDA device, else the CPU's model."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def info_report() -> str:
    """What `rmt-lab info` prints: versions, device, threads and the backbones ready to use."""
    import torch
    import transformers

    import rmt_lab
    from rmt_lab.model import available_backbones

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    rows = [
        ("rmt_lab", rmt_lab.__version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("transformers", transformers.__version__),
        ("device", "cuda" if torch.cuda.is_available() else "cpu"),
        ("cuda device", cuda),
        ("cpu", cpu_model()),
        ("torch threads", str(torch.get_num_threads())),
        ("backbones", ", ".join(available_backbones())),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)
