"""What a DDP leader shares with the other ranks, as JSON and raw tensors: nothing is pickled.

`broadcast_object_list` pickles, and a rank that unpickles what another sends runs whatever
that rank chose. Here the leader sends a JSON skeleton of the value, in which every tensor or
numpy array is a placeholder naming its dtype and shape, then each tensor's bytes; the others
parse the JSON and receive into tensors they allocated themselves.

Values: None, bool, int, float (inf and nan included), str, lists, tuples, dicts with str or
int keys (an optimizer's state_dict), tensors (channels_last kept) and numpy arrays of the
dtypes in DTYPES.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.distributed as dist

DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool)}


def skeleton(value, tensors: list[torch.Tensor]):
    """`value` as JSON-able data, its tensors appended to `tensors` and replaced by markers."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        array = isinstance(value, np.ndarray)
        if array and value.dtype.name not in DTYPES:
            raise TypeError(f"cannot share an array of dtype {value.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(value)) if array else value.detach().cpu()
        name = str(t.dtype).removeprefix("torch.")
        if name not in DTYPES:
            raise TypeError(f"cannot share a tensor of dtype {name}")
        tensors.append(t.contiguous())
        return {"$tensor": len(tensors) - 1, "dtype": name, "shape": list(t.shape), "numpy": array,
                "channels_last": t.dim() == 4 and not t.is_contiguous()
                and t.is_contiguous(memory_format=torch.channels_last)}
    if isinstance(value, dict):
        if not all(isinstance(k, str | int) and not isinstance(k, bool) for k in value):
            raise TypeError("cannot share a dict whose keys are not str or int")
        return {"$dict": [[k, skeleton(v, tensors)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return {"$tuple" if isinstance(value, tuple) else "$list": [skeleton(v, tensors) for v in value]}
    raise TypeError(f"cannot share a {type(value).__name__}: only JSON values, tensors and arrays")


def rebuild(data, tensors: list[torch.Tensor]):
    """The value a skeleton describes, with its tensors put back."""
    if not isinstance(data, dict):
        return data
    if "$tensor" in data:
        t = tensors[data["$tensor"]]
        if data.get("channels_last"):  # e.g. AdamW's moments of a channels_last conv weight:
            t = t.contiguous(memory_format=torch.channels_last)  # the fused step pairs memory
        return t.numpy() if data["numpy"] else t
    if "$dict" in data:
        return {k: rebuild(v, tensors) for k, v in data["$dict"]}
    if "$tuple" in data:
        return tuple(rebuild(v, tensors) for v in data["$tuple"])
    return [rebuild(v, tensors) for v in data["$list"]]


def markers(data) -> list[dict]:
    """The tensor markers of a skeleton, in order."""
    if isinstance(data, list):
        return [m for v in data for m in markers(v)]
    if not isinstance(data, dict):
        return []
    if "$tensor" in data:
        return [data]
    return [m for v in data.values() for m in markers(v)]


def broadcast_value(value, src: int, device: torch.device, leader: bool):
    """The leader's `value` on every rank of the default process group (tensors on the CPU)."""
    tensors: list[torch.Tensor] = []
    text = json.dumps(skeleton(value, tensors)).encode() if leader else b""
    size = torch.tensor([len(text)], dtype=torch.int64, device=device)
    dist.broadcast(size, src)
    raw = (torch.frombuffer(bytearray(text), dtype=torch.uint8).to(device) if leader
           else torch.empty(int(size.item()), dtype=torch.uint8, device=device))
    dist.broadcast(raw, src)
    data = json.loads(text if leader else bytes(raw.cpu().numpy()).decode())
    received = []
    for i, mark in enumerate(markers(data)):
        dtype = DTYPES[mark["dtype"]]
        wire = torch.uint8 if dtype == torch.bool else dtype  # gloo sends no bool
        buf = (tensors[i].to(device, wire) if leader else
               torch.empty(mark["shape"], dtype=wire, device=device))
        if buf.numel():
            dist.broadcast(buf, src)
        if not leader:
            received.append(buf.cpu().to(dtype))
    return value if leader else rebuild(data, received)
