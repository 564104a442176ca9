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
            "trains; run it through `xp train` (or set the variables of xp.numerics.PORTABLE_ENV "
            "before importing torch)"
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
