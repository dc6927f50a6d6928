"""The GAN's mains: train, evaluate and promote a DCGAN generator (workspace I/O around
tasks/gan). The generator has its own registry (models/gan_registry.json, versions under
models/gan_versions/) and champion alias; the classifier registry is only read, to pick
the feature extractor."""

from __future__ import annotations

import logging
from pathlib import Path

from evergreen import dvcfile
from evergreen.config import GanConfig, params_hash
from evergreen.errors import EvergreenError
from evergreen.workspace import Workspace, atomic_write_bytes, git_commit, read_json, write_csv, write_json
from mains.processed import checkpoint_for, load_split
from mains.versions import load_registry, record_candidate, store_version
from tasks.promote import CandidateEntry, Judgement, now

log = logging.getLogger("evergreen.gan")
GAN_DIR, GAN_VERSIONS, GAN_REGISTRY = "models/gan", "models/gan_versions", "models/gan_registry.json"


def run_gan_train(ws: Workspace, section: GanConfig) -> dict:
    """Train the generator unless models/gan already holds this data + params' generator."""
    import time

    from nets.io import save_model
    from tasks.gan import train_gan

    meta = read_json(ws.processed / "meta.json")
    ckpt, key = checkpoint_for(ws, "gan", params_hash(section))
    card_path = ws.root / GAN_DIR / "model.json"
    if card_path.exists() and read_json(card_path).get("training_key") == key:
        log.info("gan: unchanged (data and gan params match models/gan), training skipped")
        return {"ran": False}
    start = time.perf_counter()
    g, card, history = train_gan(load_split(ws, "train"), meta["classes"], section, ckpt, key)
    save_model(g, {**card, "training_key": key}, ws.root / GAN_DIR)
    dvcfile.ensure_lines(ws.root / ".gitignore", [f"/{GAN_DIR}/"])  # versions are DVC-tracked
    write_csv(ws.reports / "plots" / "gan.csv", history)
    ckpt.unlink(missing_ok=True)
    return {"ran": True, **{k: card["training"][k] for k in ("steps", "planned_steps",
                                                            "stopped_by", "width")},
            "seconds": round(time.perf_counter() - start, 2),
            **{k: history[-1][k] for k in ("d_loss", "g_loss")}}


def champion_extractor(ws: Workspace) -> tuple[Path, dict] | None:
    """The champion classifier's folder if it is a torch model for this data, else None."""
    from nets.io import WEIGHTS, read_card

    registry = load_registry(ws.registry)
    version = registry["champion"]
    if version is None:
        return None
    folder = ws.root / registry["versions"][version]["path"]
    card, meta = read_card(folder), read_json(ws.processed / "meta.json")
    if card["classes"] != meta["classes"] or card["in_shape"] != meta["in_shape"]:
        raise EvergreenError(f"{folder / 'model.json'}: the champion classifier {version} was "
                             f"trained on other classes or image shape than {ws.processed}; "
                             "run `evergreen run` on this data first")
    if (folder / WEIGHTS).exists():
        return folder, {"source": "champion", "version": version, "arch": card["arch"]}
    return ws.model_dir("teacher"), {
        "source": "teacher", "arch": read_card(ws.model_dir("teacher"))["arch"],
        "reason": f"the champion {version} is an ONNX-only export (no torch layers to hook), "
                  "so its teacher (models/teacher) gives the features"}


def run_gan_evaluate(ws: Workspace, section: GanConfig, extractor: Path, info: dict) -> dict:
    """reports/gan.json (distance, floor, ceiling, coverage) and the sample grid."""
    from nets.gan import load_generator
    from nets.io import load_model
    from tasks.data import join
    from tasks.gan import evaluate_generator, grid_samples, sample_grid_png

    g, card = load_generator(ws.root / GAN_DIR)
    classifier, clf_card = load_model(extractor)
    train = load_split(ws, "train")[0]
    heldout = join(load_split(ws, "val")[0], load_split(ws, "test")[0])
    report = evaluate_generator(g, classifier, clf_card, train, heldout, section)[0]
    report["feature_extractor"] = info
    report["generator"] = {"conditional": g.conditional, "options": card["options"]}
    write_json(ws.reports / "gan.json", report)
    grid = grid_samples(g, card["classes"], section.seed)
    atomic_write_bytes(ws.reports / "figures" / "gan_samples.png",
                       sample_grid_png(grid, 10 if g.conditional else 8))
    return report


def champion_generator_distance(ws: Workspace, registry: dict, section: GanConfig,
                                extractor: Path) -> float | None:
    """The champion generator re-measured with today's extractor (None if not comparable)."""
    from nets.gan import load_generator
    from nets.io import load_model, read_card
    from tasks.gan import champion_distance

    folder = ws.root / registry["versions"][registry["champion"]]["path"]
    card, current = read_card(folder), read_json(ws.root / GAN_DIR / "model.json")
    if any(card[k] != current[k] for k in ("arch", "classes", "in_shape")):
        log.warning("generator champion %s is another network or makes other classes or shapes; "
                    "no champion comparison", registry["champion"])
        return None
    g, _ = load_generator(folder)
    classifier, clf_card = load_model(extractor)
    return champion_distance(g, classifier, clf_card, load_split(ws, "train")[0], section)


def run_gan_promote(ws: Workspace, section: GanConfig, report: dict, extractor: Path, run_id: str,
                    data_version: str | None) -> dict:
    """Gate the generator; record it in the generator registry; move its champion if it passes."""
    from nets.io import WEIGHTS, file_sha256
    from tasks.promote import gan_gates

    metrics = {k: report[k] for k in ("distance", "floor", "ceiling", "distance_to_ceiling",
                                      "coverage", "min_class_share_vs_uniform")}
    entry = CandidateEntry(run_id, {"metric": report["metric"], "metrics": metrics,
                                    "feature_extractor": report["feature_extractor"]},
                           data_version, params_hash(section), git_commit(ws.root), now(), None)

    def judge(registry: dict) -> Judgement:
        champ = (champion_generator_distance(ws, registry, section, extractor)
                 if registry["champion"] else None)
        return Judgement(gan_gates(report, champ, section),
                         promotion_reason=f"passed all gates in run {run_id}",
                         measured={"champion_distance_now": champ})

    def store(registry: dict) -> str:
        return store_version(registry, ws.root / GAN_DIR, ws.root / GAN_VERSIONS, sha, prefix="g")

    sha = file_sha256(ws.root / GAN_DIR / WEIGHTS)
    return record_candidate(ws.root / GAN_REGISTRY, entry, sha, "generator champion", judge, store)
