"""Which settings make the digits backbone (DVC stage `digits_pretrain`) come out the same on
another CPU model: the stage's output md5 under the `portable` profile and under variants of it.

Run it on each CPU model you want to compare and compare the lines: a variant whose md5 is the
same on two CPU models computes the same bits on both (for this model). The md5 is DVC's own
directory hash (what `dvc.lock` records for `models/digits_pretrained`), computed with xp's
`provenance.data_versions`.

Variants (each a fresh process running `projects/digits/pretrain.py` in a temporary folder):

- `portable`: the profile as it is (`xp.record.numerics`: baseline ATen kernels, oneDNN off,
  `MKL_CBWR=COMPATIBLE`, one thread, deterministic algorithms): what `dvc.lock` holds;
- `portable+onednn`: the same with oneDNN on, capped at SSE4.1 (the profile before oneDNN was
  turned off);
- single changes to either, to see which library moves the bits on this CPU: oneDNN's ISA cap,
  MKL's CBWR branch and instruction limit, ATen's capability.

    .venv/bin/python benchmarks/backbone_md5.py            # ~15 s a variant on 2 cores

Run at the repo root after `make data`; prints JSON (also benchmarks/results/backbone_md5.json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# name -> (changes to PORTABLE_ENV: None removes a variable, oneDNN on)
VARIANTS: dict[str, tuple[dict[str, str | None], bool]] = {
    "portable": ({}, False),
    "portable, MKL_ENABLE_INSTRUCTIONS=AVX512": ({"MKL_ENABLE_INSTRUCTIONS": "AVX512"}, False),
    "portable, no oneDNN cap": ({"ONEDNN_MAX_CPU_ISA": None, "DNNL_MAX_CPU_ISA": None}, False),
    "portable+onednn": ({}, True),
    "portable+onednn, oneDNN cap AVX2": (
        {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}, True),
    "portable+onednn, no MKL_CBWR": ({"MKL_CBWR": None}, True),
    "portable+onednn, ATEN_CPU_CAPABILITY=avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, True),
}  # fmt: skip

RUN = """
import json, sys
import xp.record.numerics as numerics
changes, onednn = json.loads(sys.argv[1]), sys.argv[2] == "1"
for key, value in changes.items():
    if value is None:
        numerics.PORTABLE_ENV.pop(key, None)
    else:
        numerics.PORTABLE_ENV[key] = value
sys.path.insert(0, sys.argv[3])
import pretrain  # applies the profile before torch is imported
import torch
pin = numerics.pin_torch
def pin_then(profile):
    pin(profile)
    torch.backends.mkldnn.enabled = onednn
pretrain.numerics.pin_torch = pin_then
pretrain.main()
"""


def backbone_md5(changes: dict[str, str | None], onednn: bool) -> str:
    from xp.record.provenance import data_versions

    with tempfile.TemporaryDirectory(prefix="xp-backbone-") as work:
        data = Path(work) / "data" / "digits"
        data.mkdir(parents=True)
        (data / "pretrain.npz").symlink_to(ROOT / "data" / "digits" / "pretrain.npz")
        env = {k: v for k, v in os.environ.items()  # only the profile's settings
               if not k.startswith(("MKL_", "ONEDNN_", "DNNL_", "ATEN_"))}  # fmt: skip
        subprocess.run([sys.executable, "-c", RUN, json.dumps(changes), "1" if onednn else "0",
                        str(ROOT / "projects" / "digits")], cwd=work, env=env, check=True,
                       capture_output=True)  # fmt: skip
        out = data_versions({"backbone": "models/digits_pretrained"}, work)
        return out["backbone"]["md5"]


def main() -> None:
    from xp.record.numerics import cpu_model

    result: dict = {"cpu": cpu_model(), "md5": {}}
    for name, (changes, onednn) in VARIANTS.items():
        result["md5"][name] = backbone_md5(changes, onednn)
        print(f"{name}: {result['md5'][name]}", file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "backbone_md5.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
