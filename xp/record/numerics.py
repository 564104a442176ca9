"""Numerics profiles: which kernels a process computes with, and what the record says about it.

ATen, oneDNN and MKL each pick kernels by the CPU's instruction set (AVX2, AVX-512, AMX, ...), so
the low bits of every result change from one CPU model to another; threads change the order of
reductions. `native` lets them pick (fastest); `portable` pins, before torch is imported, every
setting known to change CPU results, so that x86-64 machines of different models can compute the
same bits: ATen's baseline kernels, no oneDNN (it picks kernels and blocking by CPU model even
when capped: an Intel Xeon and an AMD EPYC gave different backbones with its SSE4.1 path),
MKL's conditional numerical reproducibility (documented to give the same results on Intel and
non-Intel processors), one thread, deterministic algorithms. A GPU is never bit-compatible with
a CPU (or another GPU): there, reproduction is statistical (`xp reproduce --margin`).

Nothing here imports torch at module level: `apply` must run before torch is imported.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from xp import XpError

PROFILES = ("native", "portable")

PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's vectorised kernels: the baseline every x86-64 has
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN (convolutions, matmul): no AVX/AMX code paths
    "DNNL_MAX_CPU_ISA": "SSE41",  # (its name before oneDNN 2.x)
    "MKL_CBWR": "COMPATIBLE",  # MKL's conditional numerical reproducibility, any CPU
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",  # (older MKL: the same limit by another switch)
    "OMP_NUM_THREADS": "1",  # one thread: reductions in one order
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}

# every environment variable known to change numerical results; recorded with each run
NUMERICS_ENV = (
    "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "KMP_AFFINITY", "KMP_DETERMINISTIC_REDUCTION",
    "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "PYTORCH_CUDA_ALLOC_CONF",
)  # fmt: skip


class NumericsError(XpError):
    """A numerics profile that cannot be applied in this process."""


def apply(profile: str) -> None:
    """Pin the settings of `profile` in this process (and the processes it starts).

    Raises:
        NumericsError: an unknown profile, or `portable` asked for after torch was imported
            (its kernels are chosen at import and cannot be changed afterwards).
    """
    if profile not in PROFILES:
        raise NumericsError(f"train.numerics={profile!r}: use one of {', '.join(PROFILES)}")
    os.environ["XP_NUMERICS"] = profile
    if profile == "native":
        return
    if "torch" in sys.modules and not _already(PORTABLE_ENV):
        raise NumericsError(
            "train.numerics=portable must be set before torch is imported in the process that "
            "trains; run it through `xp train` (or set the variables of "
            "xp.record.numerics.PORTABLE_ENV before importing torch)"
        )
    os.environ.update(PORTABLE_ENV)


def _already(env: dict[str, str]) -> bool:
    return all(os.environ.get(k) == v for k, v in env.items())


def current() -> str:
    """The profile this process computes under (`portable` only if every setting is pinned)."""
    return "portable" if _already(PORTABLE_ENV) else "native"


def pin_torch(profile: str) -> None:
    """The part of a profile that is set through torch once it is imported."""
    if profile == "portable":
        import torch

        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        # no oneDNN: convolutions by ATen's own im2col + MKL GEMM (bit-reproducible across
        # processors under MKL_CBWR=COMPATIBLE). oneDNN picks kernels and blocking by CPU: on an
        # AMD EPYC its SSE41-capped convolutions still gave other weights than on an Intel Xeon.
        torch.backends.mkldnn.enabled = False
        _exact_sqrt(True)
    else:
        _exact_sqrt(False)


_SQRT_KERNELS: list[Any] = []  # the torch.library registration while it is in force


def _exact_sqrt(on: bool) -> None:
    """Route aten::sqrt on CPU through IEEE 754 square roots (numpy's), or back to ATen's own.

    ATen computes a float sqrt with MKL's vector math (`vsSqrt`, VML_HA: within 1 ulp, not
    correctly rounded), and MKL picks that code by CPU whatever MKL_CBWR says: an Intel Xeon and an
    AMD EPYC gave other bits for one in five square roots (`benchmarks/op_fingerprint.py`), so
    AdamW's `exp_avg_sq.sqrt()` parted their weights from the first step. A correctly rounded
    square root has one answer on every CPU. The gradient (grad / 2 sqrt(x)) takes the result, so
    autograd is unchanged.
    """
    if not on:
        while _SQRT_KERNELS:
            _SQRT_KERNELS.pop()._destroy()
        return
    if _SQRT_KERNELS:
        return
    import warnings

    import numpy as np
    import torch

    def compute(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().resolve_conj().resolve_neg()
        if not (x.is_floating_point() or x.is_complex()):
            x = x.to(torch.get_default_dtype())  # integers and bools: sqrt gives floats
        half = x.dtype in (torch.float16, torch.bfloat16)
        # (half precision: a correctly rounded float32 root rounds once more to the root the exact
        # one would give, 24 >= 2 x 11 + 2 bits)
        a = (x.float() if half else x).numpy()
        with np.errstate(invalid="ignore"):  # sqrt(-1) is nan, as in ATen, without a warning
            root = torch.from_numpy(np.sqrt(a, out=np.empty_like(a, order="C")))
        return root.to(x.dtype) if half else root

    def sqrt_out(x: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
        result = compute(x)
        out.resize_(result.shape)
        return out.copy_(result)

    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel": we mean it
        lib.impl("sqrt", compute, "CPU")
        lib.impl("sqrt_", lambda x: x.copy_(compute(x)), "CPU")
        lib.impl("sqrt.out", sqrt_out, "CPU")
    _SQRT_KERNELS.append(lib)


def cpu_model() -> str:
    """The CPU's model name, as the OS reports it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, timeout=5)  # fmt: skip
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def describe(torch: Any = None) -> dict[str, Any]:
    """What decides this process's numerics: CPU, kernels, profile, GPU, and the variables.

    Returns:
        {"cpu", "cpu_capability" (what ATen dispatches to), "threads" (torch's intra-op
        threads), "numerics", "gpu", "cuda", "cudnn", "env" (every variable of NUMERICS_ENV that
        is set), "torch_config" (`torch.__config__.show()`)}.
    """
    info: dict[str, Any] = {"cpu": cpu_model(), "numerics": current(), "cpu_capability": None,
                            "threads": None,
                            "gpu": None, "cuda": None, "cudnn": None,
                            "env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ},
                            "torch_config": None}  # fmt: skip
    if torch is None:
        return info
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["threads"] = torch.get_num_threads()  # intra-op threads: the order of reductions
        info["torch_config"] = torch.__config__.show()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
            info["cudnn"] = str(torch.backends.cudnn.version())
    except Exception:  # a broken driver must not stop the record; it says what it could read
        pass
    return info


def env_summary(env: dict[str, str]) -> str:
    """The numerics variables that are set, as one comparable tag value (`none` when none is)."""
    return ",".join(f"{k}={env[k]}" for k in sorted(env)) or "none"
