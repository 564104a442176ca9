"""Error analysis: a run's confusion matrix and wrong test examples, the examples a repeat's seeds
get wrong always or only sometimes, their figures, and text models' token attributions."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from matplotlib import image as mpimg

from xp.diagnose.errors import over_seeds, plot_confusion, plot_images, run_errors

# 6 test examples, 3 classes; wrong: 1 (0 -> 1, p 0.6), 3 (1 -> 2, p 0.9), 4 (2 -> 0, p 0.7)
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 2, 0, 2]
PROBS = np.array([
    [0.8, 0.1, 0.1],
    [0.3, 0.6, 0.1],
    [0.2, 0.7, 0.1],
    [0.05, 0.05, 0.9],
    [0.7, 0.1, 0.2],
    [0.1, 0.1, 0.8],
])  # fmt: skip
TEXTS = ["good", "fine I guess", "meh", "not bad at all", "awful", "terrible"]


def test_run_errors_counts_the_confusion_and_orders_the_wrong_by_confidence():
    out = run_errors(Y_TRUE, Y_PRED, PROBS, TEXTS, label_names=["neg", "neu", "pos"])
    assert out["confusion"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert (out["n"], out["n_wrong"]) == (6, 3)
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["labels"] == ["neg", "neu", "pos"]
    assert [(c["name"], c["n"], c["wrong"]) for c in out["per_class"]] == [
        ("neg", 2, 1), ("neu", 2, 1), ("pos", 2, 1)]  # fmt: skip
    assert [w["index"] for w in out["wrong"]] == [3, 4, 1]  # most confident wrong answer first
    assert out["wrong"][0] == {"index": 3, "label": 1, "predicted": 2, "confidence": 0.9,
                               "input": "not bad at all"}  # fmt: skip
    json.dumps(out)  # plain ints, floats and lists


def test_run_errors_keeps_the_limit_but_counts_every_error_and_quotes_no_array():
    images = np.zeros((6, 8, 8), dtype=np.float32)
    out = run_errors(np.array(Y_TRUE), np.array(Y_PRED), PROBS, images, limit=2)
    assert out["n_wrong"] == 3 and [w["index"] for w in out["wrong"]] == [3, 4]
    assert all(w["input"] is None for w in out["wrong"])
    assert out["labels"] == ["0", "1", "2"]
    json.dumps(out)


def test_run_errors_counts_every_class_even_one_never_seen():
    # K comes from probs: class 3 is neither a label nor a prediction, yet has its row and column
    out = run_errors([0, 1], [1, 1], np.full((2, 4), 0.25), None)
    assert np.array(out["confusion"]).shape == (4, 4)
    assert out["per_class"][3] == {"label": 3, "name": "3", "n": 0, "wrong": 0,
                                   "error_rate": None}  # fmt: skip
    with pytest.raises(ValueError, match="label names"):
        run_errors([0], [0], np.ones((1, 2)), None, label_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="outside"):
        run_errors([0], [2], np.ones((1, 2)), None)


def test_over_seeds_splits_the_hard_examples_from_the_seed_lottery():
    out = over_seeds({3: [5, 1, 2], 1: [1, 2, 2], 2: [2, 1, 7, 9]}, n_test=10)
    assert out["seeds"] == [1, 2, 3] and out["n_seeds"] == 3
    assert out["always_wrong"] == [1, 2]
    assert out["sometimes_wrong"] == [
        {"index": 5, "n_wrong": 1, "seeds": [3]},
        {"index": 7, "n_wrong": 1, "seeds": [2]},
        {"index": 9, "n_wrong": 1, "seeds": [2]},
    ]
    assert (out["n_always"], out["n_sometimes"], out["n_never"]) == (2, 3, 5)
    assert (out["share_always"], out["share_sometimes"], out["share_never"]) == (0.2, 0.3, 0.5)
    json.dumps(out)
    with pytest.raises(ValueError, match="outside"):
        over_seeds({1: [10]}, n_test=10)


def test_over_seeds_orders_the_lottery_by_how_many_seeds_lose_it():
    out = over_seeds({1: [4, 8], 2: [8], 3: [0, 8, 4]}, n_test=9)
    assert out["always_wrong"] == [8]
    assert [(x["index"], x["n_wrong"]) for x in out["sometimes_wrong"]] == [(4, 2), (0, 1)]


def png_size(path) -> tuple[int, int]:
    """(width, height) in pixels."""
    h, w = mpimg.imread(path).shape[:2]
    return w, h


def test_plot_images_fits_a_page_and_caps_the_grid(tmp_path):
    rng = np.random.default_rng(0)
    many = rng.uniform(0, 16, size=(30, 8, 8))
    out = plot_images(many, [f"#{i} label 7 -> 3 (0.91)" for i in range(30)],
                      tmp_path / "many.png", "wrong on every seed")  # fmt: skip
    assert out.stat().st_size > 1000
    w, h = png_size(out)
    assert 780 <= w <= 800  # 8 inches at 100 dpi, six images a row
    assert h < 600  # 24 images: 4 rows, not the 5 that 30 would take
    few = plot_images(rng.uniform(size=(2, 1, 8, 8)), ["a", "b"], tmp_path / "few.png", "t")
    assert png_size(few)[0] < w
    flat = plot_images(rng.uniform(size=(1, 64)), ["a"], tmp_path / "flat.png", "t")
    assert flat.stat().st_size > 0
    none = plot_images(np.zeros((0, 8, 8)), [], tmp_path / "none.png", "no errors")
    assert none.stat().st_size > 0
    with pytest.raises(ValueError):
        plot_images(rng.uniform(size=(1, 63)), ["a"], tmp_path / "bad.png", "t")


def test_plot_confusion_is_at_most_six_inches_wide(tmp_path):
    out = plot_confusion(run_errors(Y_TRUE, Y_PRED, PROBS, None)["confusion"], ["a", "b", "c"],
                         tmp_path / "confusion.png")  # fmt: skip
    assert out.stat().st_size > 1000 and png_size(out)[0] <= 600
    ten = plot_confusion(np.eye(10, dtype=int) * 7, [str(i) for i in range(10)],
                         tmp_path / "ten.png")  # fmt: skip
    assert 590 <= png_size(ten)[0] <= 600


# token attributions: a tiny BERT trained for a few dozen steps where "zebra" decides the class
WORDS = "the cat dog sat on mat red blue house tree river quickly slowly ran saw big small".split()


@pytest.fixture(scope="module")
def zebra_model(tiny_bert):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=3, ignore_mismatched_sizes=True
    )
    rng = random.Random(0)
    texts, labels = [], []
    for i in range(48):  # six words each; in half of them one is "zebra": class 1, else 0
        words = rng.sample(WORDS, 6)
        if i % 2:
            words[rng.randrange(6)] = "zebra"
        texts.append(" ".join(words))
        labels.append(i % 2)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    y = torch.tensor(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses to threads on a busy machine
    try:
        for _ in range(50):
            loss = model(**enc, labels=y).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        assert (model(**enc).logits.argmax(-1) == y).all(), "the toy model did not learn zebra"
    return model, tokenizer


def test_token_attributions_find_the_word_the_model_depends_on(zebra_model):
    from xp.train.attribution import token_attributions

    model, tokenizer = zebra_model
    model.train()  # the caller's mode comes back
    texts = ["the big dog zebra sat on mat", "zebra ran to the river slowly", "unbelievably"]
    out = token_attributions(model, tokenizer, texts, [1, 1, 0], "cpu")
    assert len(out) == 3
    for text, tokens in zip(texts, out):
        assert [t for t, _ in tokens] == tokenizer.tokenize(text)  # no [CLS], [SEP], [PAD]
        assert sum(abs(s) for _, s in tokens) == pytest.approx(1.0)
    assert len(out[2]) > 1  # word pieces
    for tokens in out[:2]:
        top, score = max(tokens, key=lambda ts: ts[1])
        assert top == "zebra" and score > 0.5
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    again = token_attributions(model, tokenizer, texts, [1, 1, 0], "cpu")
    assert again == out  # deterministic: eval mode, each text alone
    assert token_attributions(model, tokenizer, [""], [0], "cpu") == [[]]
    model.eval()


def test_token_attributions_give_all_to_the_only_word_with_an_embedding(tiny_bert):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xp.train.attribution import token_attributions

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=3, ignore_mismatched_sizes=True
    )
    zebra = tokenizer.convert_tokens_to_ids("zebra")
    with torch.no_grad():  # every other word (and the pad baseline) embeds to 0: nothing to move
        weight = model.get_input_embeddings().weight
        keep = weight[zebra].clone()
        weight.zero_()
        weight[zebra] = keep
    (tokens,) = token_attributions(model, tokenizer, ["the cat saw a zebra today"], [2], "cpu")
    scores = dict(tokens)
    assert abs(scores["zebra"]) == pytest.approx(1.0)
    assert all(s == 0.0 for t, s in tokens if t != "zebra")


def test_to_html_escapes_and_colours_by_direction():
    from xp.train.attribution import to_html

    out = to_html([("<b>", 0.5), ("un", -0.25), ("##like", 0.25)])
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert out.count("<span") == 3
    assert "rgba(220, 38, 38, 0.80)" in out  # the strongest, towards the wrong answer
    assert "rgba(37, 99, 235, 0.40)" in out  # half as strong, away from it
    assert "un</span><span" in out  # the word piece joins its word
    assert to_html([]) == ""
