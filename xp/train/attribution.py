"""Token attributions for a text model's answers: which words drove it (Captum's integrated
gradients).

For an example a text model gets wrong, error analysis shows the text; this shows which of its
words pushed the model towards the wrong answer. Integrated gradients (Captum's
`LayerIntegratedGradients`, on the model's input embedding layer) integrates the gradient of the
wrong class's logit along a straight path from a baseline to the text's embeddings; the baseline
is the same sequence with every non-special token replaced by the pad token, so [CLS], [SEP] and
the positions stay put and only the words are taken away. A token's attribution is its share of
that logit's change, summed over the embedding dimension; positive pushes towards the attributed
class, negative away from it.

Each text is attributed alone (no padding from a batch), the model in eval mode (no dropout), so
the scores are a deterministic function of the model and the text. The model's mode is restored;
Captum takes gradients with `torch.autograd.grad`, so none is left on the parameters. Captum is
imported inside the function, so importing this module is cheap.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import torch

# the colours of `to_html`: towards the attributed (wrong) class, and away from it
TOWARDS = (220, 38, 38)
AWAY = (37, 99, 235)
MAX_OPACITY = 0.8


def token_attributions(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    targets: Sequence[int],
    device: torch.device | str,
    max_length: int = 32,
    n_steps: int = 32,
) -> list[list[tuple[str, float]]]:
    """Integrated-gradients attributions of each text's tokens to the logit of its target class.

    Args:
        model: a Hugging Face sequence classifier (`AutoModelForSequenceClassification`), already
            on `device`; its input embeddings (`get_input_embeddings()`) are the attributed layer.
        tokenizer: its tokenizer (with a pad token).
        texts: the texts.
        targets: for each text, the class whose logit is attributed (for a wrong answer, the class
            the model predicted, so the scores say which words drove the mistake).
        device: where the model is.
        max_length: texts are truncated to this many tokens, as in training.
        n_steps: the integral's steps (Gauss-Legendre).

    Returns:
        One list per text of (token, score): its tokens as `convert_ids_to_tokens` writes them
        (word pieces such as "##ing" included), special tokens and masked positions dropped, in
        order; the scores are normalised so their absolute values sum to 1 (all 0 where nothing
        was attributed).
    """
    from captum.attr import LayerIntegratedGradients

    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts for {len(targets)} targets")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: the baseline needs one")

    def logits(
        input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    was_training = model.training
    model.eval()
    lig = LayerIntegratedGradients(logits, model.get_input_embeddings())
    out: list[list[tuple[str, float]]] = []
    try:
        with torch.enable_grad():
            for text, target in zip(texts, targets):
                enc = tokenizer(str(text), truncation=True, max_length=max_length,
                                return_special_tokens_mask=True, return_tensors="pt")  # fmt: skip
                special = enc.pop("special_tokens_mask")[0].bool()
                mask = enc.get("attention_mask", torch.ones_like(enc["input_ids"]))
                input_ids = enc["input_ids"].to(device)
                types = enc.get("token_type_ids")
                rest = (mask.to(device), None if types is None else types.to(device))
                baseline = input_ids.clone()
                baseline[0, ~special.to(device)] = tokenizer.pad_token_id
                attr = lig.attribute(
                    input_ids, baselines=baseline, target=int(target),
                    additional_forward_args=rest, n_steps=n_steps,
                )  # fmt: skip
                scores = attr.detach().sum(dim=-1)[0].to("cpu", torch.float64)
                keep = (mask[0].bool() & ~special).nonzero().flatten().tolist()
                tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0, keep].tolist())
                kept = scores[keep]
                total = float(kept.abs().sum())
                kept = kept / total if total > 0 else torch.zeros_like(kept)
                out.append(list(zip(tokens, (float(s) for s in kept))))
    finally:
        model.train(was_training)
    return out


def _pieces(tokens: Sequence[str]) -> list[tuple[str, bool]]:
    """Each token as the text it shows and whether a space goes before it: word pieces ("##ing")
    join the word before; SentencePiece's "▁" and byte-level BPE's "Ġ" start a word."""
    marked = any(t.startswith(("▁", "Ġ")) for t in tokens)
    out = []
    for j, t in enumerate(tokens):
        if marked:
            starts = t.startswith(("▁", "Ġ"))
            out.append((t[1:] if starts else t, starts and j > 0))
        elif t.startswith("##"):
            out.append((t[2:], False))
        else:
            out.append((t, j > 0))
    return out


def to_html(tokens_with_scores: Sequence[tuple[str, float]]) -> str:
    """The tokens as `<span>`s whose background is red where the token pushed towards the
    attributed (wrong) class, blue where it pushed away, the opacity in proportion to the score
    (the strongest token at 0.8); each span's title holds its score. Tokens are html-escaped; word
    pieces are joined to their word. Returns an inline HTML fragment (no enclosing element)."""
    tokens = [t for t, _ in tokens_with_scores]
    scores = [float(s) for _, s in tokens_with_scores]
    top = max((abs(s) for s in scores), default=0.0)
    parts = []
    for (text, space), score in zip(_pieces(tokens), scores):
        r, g, b = TOWARDS if score >= 0 else AWAY
        alpha = MAX_OPACITY * abs(score) / top if top > 0 else 0.0
        parts.append(
            f'{" " if space else ""}<span style="background-color: rgba({r}, {g}, {b}, '
            f'{alpha:.2f})" title="{score:+.3f}">{html.escape(text)}</span>'
        )
    return "".join(parts)
