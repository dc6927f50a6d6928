"""The `gan-pipeline` flow: ingest -> validate -> preprocess (the classifier's own tasks),
then train, evaluate and promote a DCGAN generator.

The generator has its own registry (models/gan_registry.json, versions under
models/gan_versions/) and champion alias; the classifier registry is only read, to pick
the feature extractor.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from evergreen.config import Config, load_config, params_hash
from evergreen.errors import EvergreenError
from evergreen.workspace import Workspace, atomic_write_bytes, git_commit, read_json, write_json
from flows import dvcfile
from flows.stages import checkpoint_for, load_split, write_csv
from flows.training import ingest_task, run_pipeline_stages

log = logging.getLogger("evergreen.gan")
GAN_DIR, GAN_VERSIONS, GAN_REGISTRY = "models/gan", "models/gan_versions", "models/gan_registry.json"
NO_CHAMPION = ("no champion classifier in models/registry.json, so the train stage's teacher "
               "(models/teacher) gives the features; run `evergreen run` to gate a champion")


# ---- stage mains: workspace I/O around tasks/gan/ --------------------------------------

def run_gan_train(ws: Workspace, cfg: Config) -> dict:
    """Train the generator unless models/gan already holds this data + params' generator."""
    import time

    from nets.io import save_model
    from tasks.gan import train_gan

    meta = read_json(ws.processed / "meta.json")
    ckpt, key = checkpoint_for(ws, "gan", params_hash(cfg.gan))
    card_path = ws.root / GAN_DIR / "model.json"
    if card_path.exists() and read_json(card_path).get("training_key") == key:
        log.info("gan: unchanged (data and gan params match models/gan), training skipped")
        return {"ran": False}
    start = time.perf_counter()
    g, card, history = train_gan(load_split(ws, "train"), meta["classes"], cfg.gan, ckpt, key)
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
    from tasks.promote import load_registry

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


def run_gan_evaluate(ws: Workspace, cfg: Config, extractor: Path, info: dict) -> dict:
    """reports/gan.json (distance, floor, ceiling, coverage) and the sample grid."""
    from nets.gan import load_generator
    from nets.io import load_model
    from tasks.gan import evaluate_generator, grid_samples, sample_grid_png

    g, card = load_generator(ws.root / GAN_DIR)
    classifier, clf_card = load_model(extractor)
    train = load_split(ws, "train")[0]
    heldout = np.concatenate([load_split(ws, "val")[0], load_split(ws, "test")[0]])
    report = evaluate_generator(g, classifier, clf_card, train, heldout, cfg.gan)[0]
    report["feature_extractor"] = info
    report["generator"] = {"conditional": g.conditional, "options": card["options"]}
    write_json(ws.reports / "gan.json", report)
    grid = grid_samples(g, card["classes"], cfg.gan.seed)
    atomic_write_bytes(ws.reports / "figures" / "gan_samples.png",
                       sample_grid_png(grid, 10 if g.conditional else 8))
    return report


def champion_generator_distance(ws: Workspace, registry: dict, cfg: Config,
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
    return champion_distance(g, classifier, clf_card, load_split(ws, "train")[0], cfg.gan)


def run_gan_promote(ws: Workspace, cfg: Config, report: dict, extractor: Path, run_id: str,
                    data_version: str | None) -> dict:
    """Gate the generator; record it in the generator registry; move its champion if it passes."""
    from nets.io import WEIGHTS, file_sha256
    from tasks.gan import gan_gates, store_generator
    from tasks.promote import gate_table, load_registry, now, record, save_registry

    path = ws.root / GAN_REGISTRY
    registry, sha = load_registry(path), file_sha256(ws.root / GAN_DIR / WEIGHTS)
    champion = registry["champion"]
    metrics = {k: report[k] for k in ("distance", "floor", "ceiling", "distance_to_ceiling",
                                      "coverage", "min_class_share_vs_uniform")}
    entry = {"run_id": run_id, "metric": report["metric"], "metrics": metrics,
             "feature_extractor": report["feature_extractor"], "data_version": data_version,
             "params_hash": params_hash(cfg.gan), "git_commit": git_commit(ws.root),
             "time": now(), "champion_before": champion}
    if champion and registry["versions"][champion]["sha256"] == sha:
        entry.update(version=champion, verdict="unchanged", gates=[],
                     reasons=[f"candidate is the generator champion {champion}: nothing changed"])
        save_registry(path, record(registry, entry, False, ""))
        return {**entry, "new_version": False}
    champ = champion_generator_distance(ws, registry, cfg, extractor) if champion else None
    gates = gan_gates(report, champ, cfg.gan)
    passed, known = all(g.passed for g in gates), set(registry["versions"])
    version = store_generator(registry, ws.root / GAN_DIR, ws.root / GAN_VERSIONS, GAN_VERSIONS, sha)
    registry["versions"][version].setdefault("created_at", entry["time"])
    entry.update(version=version, verdict="promoted" if passed else "rejected",
                 gates=gate_table(gates), reasons=[g.reason() for g in gates if not g.passed],
                 champion_distance_now=champ)
    save_registry(path, record(registry, entry, passed, f"passed all gates in run {run_id}"))
    return {**entry, "new_version": version not in known}


# ---- Prefect tasks and the flow ---------------------------------------------------------

@task(name="train_gan", cache_policy=NO_CACHE)
def train_gan_task(ws: Workspace, cfg: Config) -> dict:
    """Train the DCGAN (a rerun resumes from the last epoch checkpoint)."""
    return run_gan_train(ws, cfg)


@task(name="evaluate_gan", cache_policy=NO_CACHE)
def evaluate_gan_task(ws: Workspace, cfg: Config, extractor: Path, info: dict) -> dict:
    """Domain FID with its floor and ceiling, class coverage, sample grid."""
    return run_gan_evaluate(ws, cfg, extractor, info)


@task(name="promote_gan", cache_policy=NO_CACHE)
def promote_gan_task(ws: Workspace, cfg: Config, report: dict, extractor: Path) -> dict:
    """Gate the generator and record it in models/gan_registry.json."""
    outcome = run_gan_promote(ws, cfg, report, extractor, str(flow_run.id or "local"),
                              dvcfile.data_version(ws.root))
    if outcome.pop("new_version"):
        dvcfile.track(ws.root, GAN_VERSIONS)
    return outcome


def data_stages(ws: Workspace, cfg: Config, landed: dict, overrides: list[str]) -> dict:
    """validate -> preprocess (and train, when no champion classifier can give features)."""
    wanted = ["validate", "preprocess"] + ([] if champion_ready(ws) else ["train"])
    return run_pipeline_stages(ws, cfg, landed, overrides, wanted)


def champion_ready(ws: Workspace) -> bool:
    from tasks.promote import load_registry

    return load_registry(ws.registry)["champion"] is not None


def publish_gan_artifact(report: dict, outcome: dict) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(gan_summary(report, outcome), key="gan-run-summary",
                             description="generator verdict, domain FID and class coverage")


def gan_summary(report: dict, outcome: dict) -> str:
    """Verdict, distance with its floor and ceiling, coverage and gates, as Markdown."""
    cov = ", ".join(f"{c}: {f:.1%}" for c, f in report["coverage"].items())
    lines = [f"# GAN run: {outcome['verdict']} ({outcome['version']})", "",
             f"- {report['metric']}: **{report['distance']:.4g}** (floor, held-out real: "
             f"{report['floor']:.4g}; ceiling, noise: {report['ceiling']:.4g}; "
             f"{report['distance_to_ceiling']:.1%} of the ceiling)",
             f"- features: {report['feature_extractor']['source']} "
             f"{report['feature_extractor'].get('version', '')} "
             f"({report['feature_extractor']['arch']})",
             f"- class coverage of {report['samples']['generated']} samples: {cov}"]
    if "conditional_accuracy" in report:
        lines.append(f"- classifier agrees with the requested class: "
                     f"{report['conditional_accuracy']:.1%}")
    lines.append(f"- generator champion before: {outcome['champion_before'] or 'none'}")
    if outcome["gates"]:
        lines += ["", "| gate | value | threshold | passed |", "|---|---|---|---|"]
        lines += [f"| {g['name']} | {g['value']:.4g} | {g['op']} {g['threshold']:.4g} | "
                  f"{'yes' if g['passed'] else '**no**'} |" for g in outcome["gates"]]
    return "\n".join(lines + [""] + [f"- {r}" for r in outcome["reasons"]])


@flow(name="gan-pipeline")
def gan_pipeline(workspace: str, data: str | None = None,
                 overrides: list[str] | None = None) -> dict:
    """ingest -> validate -> preprocess -> train_gan -> evaluate_gan -> promote_gan."""
    ws, overrides = Workspace(Path(workspace)), list(overrides or [])
    dvcfile.init_workspace(ws)
    cfg = load_config(ws.params, overrides)
    landed = ingest_task(ws, cfg, data)
    stages = data_stages(ws, cfg, landed, overrides)
    found = champion_extractor(ws)
    extractor, info = found or (ws.model_dir("teacher"), {
        "source": "teacher", "arch": read_json(ws.model_dir("teacher") / "model.json")["arch"],
        "reason": NO_CHAMPION})
    if found is None:
        log.warning("gan: %s", NO_CHAMPION)
    trained = train_gan_task(ws, cfg)
    report = evaluate_gan_task(ws, cfg, extractor, info)
    outcome = promote_gan_task(ws, cfg, report, extractor)
    publish_gan_artifact(report, outcome)
    return {"ingest": landed, "stages": stages, "train_gan": trained, "report": report,
            "promote": outcome}


def print_gan_outcome(result: dict) -> None:
    """What `evergreen gan run` prints: verdict, distance against floor and ceiling, files."""
    report, outcome = result["report"], result["promote"]
    print(f"generator {outcome['version']}: {outcome['verdict']}")
    print(f"  {report['metric']}: {report['distance']:.4g} (floor {report['floor']:.4g}, "
          f"ceiling {report['ceiling']:.4g}; {report['distance_to_ceiling']:.1%} of the ceiling)")
    low = min(report["coverage"], key=report["coverage"].get)
    print(f"  class coverage: {len(report['coverage'])} classes, lowest {low} at "
          f"{report['coverage'][low]:.1%}")
    for reason in outcome["reasons"]:
        print(f"  - {reason}")
    print("  reports/gan.json, reports/figures/gan_samples.png, models/gan_registry.json")
