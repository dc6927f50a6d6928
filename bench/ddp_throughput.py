"""DDP on CPU: 2 processes x 1 thread vs 1 process x 2 threads, images/s of the default teacher.

Both sides time the same thing, `tasks.train.fit` (training steps plus the per-epoch
validation, no process start-up), on the bundled digits with the default train params
(per-rank BatchNorm); the synced-BatchNorm figure is reported beside it.

    python -m bench.ddp_throughput [--epochs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from evergreen.config import PreprocessConfig, TrainConfig

GOAL = 0.95  # issue 6: 2x1 should keep at least 95% of 1x2's images/s


def digits_splits():
    """The pipeline's own preprocessing of the bundled digits: (train, val, classes, norm)."""
    from tasks.ingest import content_hash, load_digits_batch, metadata_table
    from tasks.preprocess import preprocess

    batch = load_digits_batch()
    meta = metadata_table(batch, [content_hash(img) for img in batch.x], "bench")
    p = preprocess(batch.x, batch.labels, meta, PreprocessConfig())
    return p.splits["train"], p.splits["val"], p.classes, (p.mean, p.std)


def one_process(data, cfg: TrainConfig) -> float:
    """images/s of fit in this process with cfg.threads threads."""
    from nets import build_model
    from tasks.train import FitSettings, fit, model_options

    train, val, classes, norm = data
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, tuple(train[0].shape[1:]), len(classes),
                        **model_options(cfg, train[0].shape[1:]))
    start = time.perf_counter()
    _, history = fit(model, train, val, norm, FitSettings.from_train(cfg))
    return len(train[0]) * len(history) / (time.perf_counter() - start)


def processes(data, cfg: TrainConfig) -> float:
    """images/s of fit in DDP workers, as the leader measured it."""
    from tasks.train.launcher import run_job

    result = run_job(*data, cfg)
    return result["throughput"]["images"] / result["throughput"]["seconds"]


def measure(epochs: int, sync_too: bool = True) -> dict:
    """2x1 vs 1x2 images/s; with sync_too, also 2x1 with synced BatchNorm."""
    data = digits_splits()
    base = TrainConfig().model_dump()
    base.update(epochs=epochs, early_stopping={"patience": epochs + 1, "min_delta": 0.0})
    single = TrainConfig.model_validate({**base, "threads": 2})
    torch.set_num_threads(2)
    one = one_process(data, single)
    two = {sync: processes(data, TrainConfig.model_validate({**base, "threads": 1, "distributed": {
        "nproc_per_node": 2, "sync_batchnorm": sync}})) for sync in (False, True)[:1 + sync_too]}
    ratio = two[False] / one
    return {"ddp_2x1_vs_1x2": {"value": round(ratio, 3), "unit": "ratio", "anchor": round(one, 1),
                               "goal": GOAL, "pass": ratio >= GOAL},
            "ddp_2x1_sync_bn_vs_1x2": round(two[True] / one, 3) if sync_too else None,
            "images_per_s": {"1x2": round(one, 1), "2x1": round(two[False], 1),
                             "2x1_sync_batchnorm": round(two[True], 1) if sync_too else None},
            "epochs": epochs, "train_samples": len(data[0][0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.epochs)
    if args.json:
        print(json.dumps(result))
        return
    ips = result["images_per_s"]
    print(f"1 process x 2 threads: {ips['1x2']:.0f} images/s")
    print(f"2 processes x 1 thread: {ips['2x1']:.0f} images/s, "
          f"{ips['2x1_sync_batchnorm']:.0f} with synced BatchNorm")
    bench = result["ddp_2x1_vs_1x2"]
    print(f"ratio {bench['value']:.3f} (goal >= {GOAL}): {'pass' if bench['pass'] else 'FAIL'}; "
          f"synced BatchNorm {result['ddp_2x1_sync_bn_vs_1x2']:.3f}")


if __name__ == "__main__":
    main()
