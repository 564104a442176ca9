"""What a person sees in the MLflow UI: readable run names and a repeat's summary, checked in a
real browser (headless Chromium, Debian's `chromium` package) on a store of two repeats.

Without Chromium the test skips, except with `CI=true`, where it fails (`make test` installs it
where it can: as root with apt-get).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import mlflow
import pytest

from tests.conftest import BIN
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "no chromium on PATH (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: CI must run the browser test")
        pytest.skip(message)
    return found


@pytest.fixture
def mlflow_ui(digits_groups, tmp_path):
    """`mlflow ui` on the repeats' SQLite store, on a free port; its URL."""
    port = free_port()
    store = digits_groups["env"]["MLFLOW_TRACKING_URI"]
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "ui.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # (with the job consumers it starts)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _page_text(chromium: str, url: str, tmp_path) -> str:
    """The text of a page after its JavaScript ran (tags, scripts and styles left out)."""
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=30000", url],
        capture_output=True, text=True, timeout=180,
    ).stdout  # fmt: skip
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def test_runs_are_readably_named_and_a_repeat_shows_its_summary_in_the_mlflow_ui(
    digits_groups, mlflow_ui, tmp_path, monkeypatch
):
    chromium = _chromium()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", digits_groups["env"]["MLFLOW_TRACKING_URI"])
    weak, strong = (mlflow.get_run(digits_groups["ids"][k]) for k in ("weak", "strong"))
    experiment = weak.info.experiment_id

    runs = _page_text(chromium, f"{mlflow_ui}/#/experiments/{experiment}/runs", tmp_path)
    assert "digits epochs=3 every=5 patience=null x3" in runs, runs[:3000]
    assert "digits lr=0.003 epochs=8 every=5 patience=null x3" in runs, runs[:3000]

    # the repeat's page: its name, and its description rendered from markdown
    page = _page_text(chromium, f"{mlflow_ui}/#/experiments/{experiment}/runs/{strong.info.run_id}",
                      tmp_path)  # fmt: skip
    mean = strong.data.metrics["test/f1/mean"]
    assert "digits lr=0.003 epochs=8 every=5 patience=null x3" in page
    low, high = strong.data.metrics["test/f1/ci95_low"], strong.data.metrics["test/f1/ci95_high"]
    assert f"test/f1 = {mean:.4f}" in page, page[:3000]
    assert f"95% CI [{low:.4f}, {high:.4f}], n = 3 of 3 seeds (1, 2, 3)" in page
    assert "verdict: holds" in page and "**" not in page  # markdown rendered, not shown raw

    # a seed's page carries the configuration and its seed
    from xp.record.track import children_of

    seed = next(c for c in children_of(weak.info.run_id) if c.data.params["seed"] == "2")
    page = _page_text(chromium, f"{mlflow_ui}/#/experiments/{experiment}/runs/{seed.info.run_id}",
                      tmp_path)  # fmt: skip
    assert "digits epochs=3 every=5 patience=null s2" in page, page[:3000]
