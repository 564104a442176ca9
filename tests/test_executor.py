"""Where seeds run: GPU slots (the placement itself is tested end to end in test_repeat and
tests/e2e/test_crash_safety.py)."""

import pytest

from xp.executor import ExecutorError, gpu_slots


def test_no_gpu_no_slots_and_jobs_take_gpus_in_turn():
    assert gpu_slots(None, 0, 4) is None
    assert gpu_slots(None, 2, 3) == ["0", "1", "0"]  # more jobs than GPUs: they share
    assert gpu_slots(None, 4, 2) == ["0", "1"]


def test_a_share_puts_whole_seeds_on_each_gpu_spread_first():
    assert gpu_slots(0.25, 1, 4) == ["0"] * 4
    assert gpu_slots(0.25, 2, 8) == ["0", "1"] * 4
    assert gpu_slots(0.5, 2, 3) == ["0", "1", "0"]
    assert gpu_slots(0.3, 1, 3) == ["0"] * 3  # floor(1 / 0.3) = 3 seeds per GPU
    assert gpu_slots(1, 2, 2) == ["0", "1"]
    assert gpu_slots(2, 4, 2) == ["0,1", "2,3"]  # whole GPUs of its own


@pytest.mark.parametrize(
    ("share", "gpus", "jobs", "says"),
    [
        (0.25, 0, 1, "no GPU"),
        (1.5, 2, 1, "give an integer (1 or 2)"),
        (0.0, 1, 1, "positive"),
        (float("nan"), 1, 1, "positive"),
        (0.3, 1, 4, "hold 3 seed(s) at a time"),
        (2, 4, 3, "hold 2 seed(s) at a time"),
    ],
)
def test_a_placement_that_cannot_be_is_one_clear_error(share, gpus, jobs, says):
    with pytest.raises(ExecutorError, match=None) as e:
        gpu_slots(share, gpus, jobs)
    assert says in str(e.value) and "\n" not in str(e.value)
