"""Numerics profiles and the hardware in the record."""

import os
import subprocess
import sys

import pytest

from xp.config import config_hash, load_config
from xp.judge import DIFFERS, IDENTICAL, explain
from xp.record import numerics

CHECK = """
import os, sys
from xp.record import numerics
numerics.apply(sys.argv[1])
import torch
print(numerics.current(), torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(),
      os.environ.get("MKL_CBWR"), os.environ.get("ONEDNN_MAX_CPU_ISA"))
"""


def _profile_in_a_fresh_process(profile: str, **env: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHECK, profile], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)  # fmt: skip
    return out.stdout.split()


def test_portable_pins_kernels_before_torch_is_imported():
    # a user's own setting (here: AVX2 kernels, 2 threads) does not survive the portable profile
    got = _profile_in_a_fresh_process("portable", ATEN_CPU_CAPABILITY="avx2", OMP_NUM_THREADS="2")
    assert got == ["portable", "DEFAULT", "1", "COMPATIBLE", "SSE41"]
    native = _profile_in_a_fresh_process("native")
    assert native[0] == "native" and native[3:] == ["None", "None"]


ROOTS = """
import sys
from xp.record import numerics
numerics.apply("portable")
import numpy as np, torch
numerics.pin_torch("portable")
bits = np.random.default_rng(0).integers(0, 0x7F800000, 200_000, dtype=np.int64)  # finite, >= 0
x = torch.from_numpy(bits.astype(np.int32).view(np.float32))
exact = torch.from_numpy(np.sqrt(x.numpy().astype(np.float64)).astype(np.float32))
out, inplace, leaf = torch.empty(0), x.clone(), x[:1000].clone().requires_grad_(True)
torch.sqrt(x, out=out)
inplace.sqrt_()
leaf.sqrt().sum().backward()
print(int((torch.sqrt(x) != exact).sum()), int((out != exact).sum()),
      int((inplace != exact).sum()), int((x[::3].sqrt() != exact[::3]).sum()),
      int(sum((r != exact).sum() for r in torch._foreach_sqrt([x]))),
      bool(torch.allclose(leaf.grad, 0.5 / exact[:1000], rtol=1e-6)),
      torch.sqrt(torch.tensor([4, 9])).tolist(), torch.sqrt(torch.tensor(-1.0)).isnan().item())
"""


def test_portable_square_roots_are_correctly_rounded():
    # MKL's vector sqrt (ATen's kernel) is within 1 ulp and CPU-specific: an Intel Xeon and an AMD
    # EPYC parted on one root in five, and AdamW's weights with them; IEEE's root has one answer
    out = subprocess.run([sys.executable, "-c", ROOTS], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["0", "0", "0", "0", "0", "True", "[2.0,", "3.0]", "True"]


def test_portable_after_torch_was_imported_is_refused(monkeypatch):
    import torch  # noqa: F401  (this test process has torch already)

    for key in numerics.PORTABLE_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(numerics.NumericsError, match="before torch is imported"):
        numerics.apply("portable")
    with pytest.raises(numerics.NumericsError, match="use one of native, portable"):
        numerics.apply("fast")


def test_numerics_is_an_execution_setting_left_out_of_the_config_hash(repo):
    native = load_config("digits", [], repo / "projects")
    portable = load_config("digits", ["train.numerics=portable"], repo / "projects")
    assert config_hash(native) == config_hash(portable)
    from xp.config import ConfigError

    with pytest.raises(ConfigError, match="train.numerics='fast'"):
        load_config("digits", ["train.numerics=fast"], repo / "projects")


def test_describe_names_the_cpu_its_kernels_and_the_variables(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    d = numerics.describe(torch)
    assert d["cpu"] and d["cpu"] == numerics.cpu_model()
    assert d["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert d["env"]["OMP_NUM_THREADS"] == "3"
    assert d["threads"] == torch.get_num_threads()
    assert "PyTorch built with" in d["torch_config"]
    assert (d["gpu"] is None) == (not torch.cuda.is_available())


def test_a_difference_is_explained_by_the_environment_or_called_a_bug():
    base = {
        "xp.env.cpu": "Intel Xeon",
        "xp.env.cpu_capability": "AVX512",
        "xp.env.numerics": "native",
        "xp.env.torch": "2.13.0",
        "xp.env.device": "cpu",
    }
    other_kernels = {**base, "xp.env.cpu_capability": "DEFAULT"}
    assert explain(DIFFERS, base, other_kernels, []) == "expected: cpu_capability AVX512 -> DEFAULT"
    amd = {**base, "xp.env.cpu": "AMD EPYC 9B14"}
    assert explain(DIFFERS, base, amd, []) == "expected: cpu Intel Xeon -> AMD EPYC 9B14"
    assert explain(DIFFERS, base, dict(base), []) == (
        "unexplained: same code, data, seeds and environment"
    )
    assert explain(IDENTICAL, base, other_kernels, []) is None
    cbwr = {**base, "xp.env.numerics_env": "MKL_CBWR=COMPATIBLE", "xp.env.threads": "2"}
    recorded = {**base, "xp.env.numerics_env": "none", "xp.env.threads": "2"}
    assert explain(DIFFERS, recorded, cbwr, []) == (
        "expected: numerics_env none -> MKL_CBWR=COMPATIBLE"
    )
    assert explain(DIFFERS, recorded, {**recorded, "xp.env.threads": "16"}, []) == (
        "expected: threads 2 -> 16"
    )
    # a record made before these tags existed says nothing about them: not a cause
    assert explain(DIFFERS, base, cbwr, []).startswith("unexplained")
    assert numerics.env_summary({"OMP_NUM_THREADS": "1", "MKL_CBWR": "AUTO"}) == (
        "MKL_CBWR=AUTO,OMP_NUM_THREADS=1"
    )
    assert numerics.env_summary({}) == "none"
    assert explain(DIFFERS, base, base, ["xp.git.commit: a -> b"]).startswith(
        "expected: the record differs"
    )
