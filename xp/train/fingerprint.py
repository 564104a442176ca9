"""Seed fingerprints: short hashes of what each seed drives, so a repeat can say that its seeds
took effect (no tracker checks this: `data_seed` ignored, transformers#31818; a distributed
sampler always on seed 0, transformers#11389).

- `data_order`: the order of the first training examples of the first epoch;
- `init`: the model's values as training starts (the new head, re-initialised layers);
- `dropout`: the state of the random generator dropout draws from as training starts.

Each is recorded on the training run as `xp.fingerprint.<kind>`; `xp repeat` compares them
across seeds (`xp.seed_check`), `xp reproduce` across a run and its re-run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

KINDS = ("data_order", "init", "dropout")
TAG = "xp.fingerprint."  # + kind
ORDER_EXAMPLES = 64  # the first examples of the first epoch that the data order hash covers


def _short(digest: Any) -> str:
    return digest.hexdigest()[:16]


def of_order(indices: Iterable[int]) -> str:
    """The data order: a hash of the first `ORDER_EXAMPLES` example indices."""
    first = np.fromiter((int(i) for i in indices), dtype=np.int64, count=-1)[:ORDER_EXAMPLES]
    return _short(hashlib.sha256(first.tobytes()))


def of_params(model: Any) -> str:
    """The initial values: a hash over the model's state (names and values, in name order)."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8)
                          .numpy().tobytes())  # fmt: skip
    return _short(digest)


def of_rng() -> str:
    """The dropout generator: a hash of torch's CPU generator state (and the current GPU's)."""
    import torch

    digest = hashlib.sha256(torch.random.get_rng_state().numpy().tobytes())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        digest.update(torch.cuda.get_rng_state().numpy().tobytes())
    return _short(digest)


def tags(**values: str | None) -> dict[str, str]:
    """`xp.fingerprint.<kind>` tags of the fingerprints given."""
    return {f"{TAG}{kind}": value for kind, value in values.items() if value}


DRIVES = {"data_order": ("trained on the same data order", "data seed"),
          "init": ("started from the same initial weights", "init seed"),
          "dropout": ("drew from the same dropout generator", "dropout seed")}  # fmt: skip


def seed_check(runs: list[Any]) -> list[str]:
    """What the seeds' fingerprints say (`runs`: a repeat's seeds, each with `seed` and
    `fingerprints`, kind -> hash): for each thing a seed drives, the seeds that share one
    fingerprint although their seeds differ (`seeds 1-5 trained on the same data order: the script
    ignores its data seed`). Empty: every seed took effect (or nothing was fingerprinted)."""
    found = []
    for kind, (what, seed_name) in DRIVES.items():
        groups: dict[str, set[int]] = {}  # (a folds repeat: one seed's runs on its folds agree)
        for r in runs:
            if kind in r.fingerprints:
                groups.setdefault(r.fingerprints[kind], set()).add(r.seed)
        for seeds in groups.values():
            if len(seeds) < 2:
                continue
            every = len(groups) == 1
            found.append(f"seeds {_span(sorted(seeds))} {what}: "
                         + (f"the script ignores its {seed_name}" if every
                            else f"their {seed_name}s collide or are ignored"))  # fmt: skip
    return found


def _span(seeds: list[int]) -> str:
    """`1-5` for consecutive seeds, else `1, 3, 7`."""
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))
