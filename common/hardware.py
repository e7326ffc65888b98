"""What the machine can do, asked in one place (precision and device choices of every model)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when /proc/cpuinfo lists native bf16 instructions (AVX512-BF16 or AMX-BF16);
    without them bf16 matmuls are emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def auto_precision(device_type: str) -> str:
    """"bf16" where it is native and faster (CUDA with bf16 support, or a bf16 CPU), else "fp32"."""
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"
