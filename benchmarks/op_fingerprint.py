"""Which operation gives other bits on another CPU model under the `portable` profile?

`benchmarks/backbone_md5.py` says *whether* two CPU models train the same digits backbone; this
says *where* they part: it runs, under `portable`, every operation the backbone's training uses
(the digits CNN's convolutions, pooling, linear head, cross-entropy, AdamW, each forward and
backward) and the elementwise math and reductions a transformer adds, on inputs made from
integers (exact on any CPU: no RNG kernel or libm call makes them), and hashes each result. It
also hashes the CNN's parameters after each of its first training steps. Run it on two CPU
models and compare:

    .venv/bin/python benchmarks/op_fingerprint.py          # JSON on stdout
    .venv/bin/python benchmarks/op_fingerprint.py --save   # and in benchmarks/fingerprints/<cpu>
    .venv/bin/python benchmarks/op_fingerprint.py --compare benchmarks/fingerprints/<cpu>.json

`--compare` prints the operations whose bits differ from the other CPU's (the first training
step that differs too): the library to look at. Saved fingerprints are small text files, kept in
git as the record of what each CPU model computed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xp.record import numerics  # noqa: E402

numerics.apply("portable")  # before torch

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from xp.train.cnn import new_cnn  # noqa: E402

FINGERPRINTS = ROOT / "benchmarks" / "fingerprints"


def exact(*shape: int, salt: int = 0) -> torch.Tensor:
    """Values in [-0.5, 0.5) from an integer hash: the same bits on any CPU."""
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64) + salt * 7919
    return (((i * 2654435761) % 4093).float() / 4093 - 0.5).reshape(shape)


def digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def grads(fn, *inputs: torch.Tensor) -> dict[str, str]:
    """The forward result and the gradient of each input (by an exact upstream gradient)."""
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    out.backward(exact(*out.shape, salt=99) if out.dim() else torch.tensor(1.0))
    return {"fwd": digest(out), **{f"grad{i}": digest(x.grad) for i, x in enumerate(leaves)}}


def ops() -> dict[str, str]:
    x8, x4 = exact(64, 32, 8, 8, salt=1), exact(64, 64, 4, 4, salt=2)
    cases = {
        "conv 1->32 8x8": (lambda x, w, b: F.conv2d(x, w, b, padding=1),
                           exact(64, 1, 8, 8, salt=3), exact(32, 1, 3, 3, salt=4), exact(32)),
        "conv 32->32 8x8": (lambda x, w, b: F.conv2d(x, w, b, padding=1),
                            x8, exact(32, 32, 3, 3, salt=5), exact(32, salt=6)),
        "conv 64->64 4x4": (lambda x, w, b: F.conv2d(x, w, b, padding=1),
                            x4, exact(64, 64, 3, 3, salt=7), exact(64, salt=8)),
        "relu": (F.relu, x8),
        "max_pool2d": (lambda x: F.max_pool2d(x, 2), x8),
        "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 1), x4),
        "linear 64->5": (F.linear, exact(64, 64, salt=9), exact(5, 64, salt=10), exact(5)),
        "linear 384->384": (F.linear, exact(32, 384, salt=11), exact(384, 384, salt=12)),
        "cross_entropy": (lambda z: F.cross_entropy(z, torch.arange(64) % 5),
                          exact(64, 5, salt=13) * 8),
        "softmax": (lambda z: F.softmax(z, -1), exact(32, 384, salt=14) * 8),
        "layer_norm": (lambda z: F.layer_norm(z, (384,)), exact(32, 384, salt=15)),
        "gelu": (F.gelu, exact(32, 384, salt=16) * 8),
        "tanh": (torch.tanh, exact(4096, salt=17) * 8),
        "exp": (torch.exp, exact(4096, salt=18) * 8),
        "log": (lambda z: torch.log(z + 1), exact(4096, salt=19)),
        "sqrt": (lambda z: torch.sqrt(z + 1), exact(4096, salt=20)),
        "sum": (lambda z: z.sum(), exact(100_000, salt=21)),
        "mean over a dim": (lambda z: z.mean(0), exact(1000, 64, salt=22)),
    }  # fmt: skip
    out: dict[str, str] = {}
    for name, (fn, *inputs) in cases.items():
        for part, h in grads(fn, *inputs).items():
            out[f"{name} {part}"] = h
    p = exact(64, 64, salt=23).requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=2e-3, weight_decay=1e-4)
    for step in range(3):
        p.grad = exact(64, 64, salt=24 + step)
        opt.step()
    out["adamw 3 steps"] = digest(p)
    return out


def training_steps(n: int = 5) -> dict[str, str]:
    """The digits CNN's parameters after each of its first `n` steps (integer-made batches)."""
    torch.manual_seed(0)
    model = new_cnn(num_labels=5)
    model.eval()  # no dropout: the steps test the arithmetic, not an RNG stream
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    out = {"init": digest(torch.cat([q.flatten() for q in model.parameters()]))}
    for step in range(1, n + 1):
        x = (exact(64, 64, salt=100 + step) + 0.5) * 16
        loss = F.cross_entropy(model(x), torch.arange(64) % 5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out[f"step {step}"] = digest(torch.cat([q.flatten() for q in model.parameters()]))
    return out


def cpu_id() -> str:
    """Vendor, family and model: a cloud VM's model name often hides which CPU it is."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("vendor_id", "cpu family", "model") and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    except OSError:
        return "unknown"
    return "{} family {} model {}".format(*(fields.get(k, "?") for k in
                                            ("vendor_id", "cpu family", "model")))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", action="store_true", help="write benchmarks/fingerprints/")
    parser.add_argument("--compare", type=Path, help="another CPU's saved fingerprint")
    args = parser.parse_args()
    numerics.pin_torch("portable")
    result = {"cpu": f"{numerics.cpu_model()} ({cpu_id()})", "torch": torch.__version__,
              "ops": ops(), "training": training_steps()}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.save:
        FINGERPRINTS.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", result["cpu"].lower()).strip("-")
        (FINGERPRINTS / f"{slug}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.compare:
        other = json.loads(args.compare.read_text())
        print(f"\n{result['cpu']} (torch {result['torch']}) against {other['cpu']} "
              f"(torch {other['torch']}):", file=sys.stderr)  # fmt: skip
        for part in ("ops", "training"):
            differ = [k for k, h in result[part].items() if other[part].get(k) != h]
            print(f"  {part}: {len(differ)} of {len(result[part])} differ"
                  + "".join(f"\n    {k}" for k in differ), file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
