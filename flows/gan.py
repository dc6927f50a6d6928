"""The `gan-pipeline` flow: ingest -> validate -> preprocess (the classifier's own tasks),
then train, evaluate and promote a DCGAN generator.

The generator has its own registry (models/gan_registry.json, versions under
models/gan_versions/) and champion alias; the classifier registry is only read, to pick
the feature extractor.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from evergreen import dvcfile
from evergreen.config import Config
from evergreen.workspace import Workspace, read_json
from flows.training import ingest_task, run_pipeline_stages, start_run
from mains.gan import (
    GAN_VERSIONS,
    champion_extractor,
    run_gan_evaluate,
    run_gan_promote,
    run_gan_train,
)
from mains.versions import load_registry

log = logging.getLogger("evergreen.gan")
NO_CHAMPION = ("no champion classifier in models/registry.json, so the train stage's teacher "
               "(models/teacher) gives the features; run `evergreen run` to gate a champion")


# ---- Prefect tasks and the flow ---------------------------------------------------------

@task(name="train_gan", cache_policy=NO_CACHE)
def train_gan_task(ws: Workspace, cfg: Config) -> dict:
    """Train the DCGAN (a rerun resumes from the last epoch checkpoint)."""
    return run_gan_train(ws, cfg.gan)


@task(name="evaluate_gan", cache_policy=NO_CACHE)
def evaluate_gan_task(ws: Workspace, cfg: Config, extractor: Path, info: dict) -> dict:
    """Domain FID with its floor and ceiling, class coverage, sample grid."""
    return run_gan_evaluate(ws, cfg.gan, extractor, info)


@task(name="promote_gan", cache_policy=NO_CACHE)
def promote_gan_task(ws: Workspace, cfg: Config, report: dict, extractor: Path) -> dict:
    """Gate the generator and record it in models/gan_registry.json."""
    outcome = run_gan_promote(ws, cfg.gan, report, extractor, str(flow_run.id or "local"),
                              dvcfile.data_version(ws.root))
    if outcome.pop("new_version"):
        dvcfile.track(ws.root, GAN_VERSIONS)
    return outcome


def data_stages(ws: Workspace, cfg: Config, landed: dict, overrides: list[str]) -> dict:
    """validate -> preprocess (and train, when no champion classifier can give features)."""
    wanted = ["validate", "preprocess"] + ([] if champion_ready(ws) else ["train"])
    return run_pipeline_stages(ws, cfg, landed, overrides, wanted)


def champion_ready(ws: Workspace) -> bool:
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
    ws, overrides, cfg = start_run(workspace, overrides)
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
