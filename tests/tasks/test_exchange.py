"""What DDP ranks share, as JSON and tensors: a checkpoint's parts survive the round trip."""

import json
import math

import numpy as np
import pytest
import torch

from nets import build_model
from tasks.train.exchange import rebuild, skeleton


def round_trip(value):
    tensors = []
    text = json.dumps(skeleton(value, tensors))
    return rebuild(json.loads(text), [t.clone() for t in tensors])


def test_a_training_checkpoint_survives_the_round_trip():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, channels=[8, 16])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    sched.step()
    state = {"key": "k", "epoch": 1, "model": model.state_dict(), "optim": opt.state_dict(),
             "sched": sched.state_dict(), "gen": torch.Generator().manual_seed(3).get_state(),
             "history": [{"epoch": 1, "val_loss": 0.5}], "best": math.inf, "stale": 0}

    back = round_trip(state)

    assert back["best"] == math.inf and back["history"] == state["history"]
    assert all(torch.equal(back["model"][k], v) for k, v in state["model"].items())
    assert set(back["optim"]["state"]) == set(state["optim"]["state"])  # int keys stay ints
    assert back["optim"]["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples stay tuples
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(back["optim"])
    assert torch.equal(torch.Generator().set_state(back["gen"]).get_state(), state["gen"])


def test_numpy_arrays_come_back_as_numpy_of_their_dtype():
    data = {"train_x": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "train_y": np.array([1, 0]),
            "mask": np.array([True, False])}
    back = round_trip(data)
    for k, v in data.items():
        assert isinstance(back[k], np.ndarray) and back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)


@pytest.mark.parametrize("value", [object(), {1.5: "x"}, {"f": len}, np.array(["a"], dtype=object)])
def test_anything_else_is_refused(value):
    with pytest.raises(TypeError, match="cannot share"):
        skeleton(value, [])


def test_channels_last_tensors_keep_their_layout():
    """AdamW's fused step walks a weight and its moments in memory order: a channels_last
    weight's moments must come back channels_last (a contiguous copy diverged a resumed run)."""
    t = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    back = round_trip({"w": t, "plain": torch.randn(4, 3, 5, 5)})
    assert back["w"].is_contiguous(memory_format=torch.channels_last) and torch.equal(back["w"], t)
    assert back["plain"].is_contiguous()
