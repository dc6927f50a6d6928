"""The stage registry: dvc.yaml, the CLI, the flows and the config sections all follow it."""

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml

from evergreen import stages as registry
from evergreen.config import SECTIONS, Config
from evergreen.stages import STAGES, Stage, load_main, pure_names, stage


def test_every_stage_is_a_config_section_and_reads_real_params():
    for entry in STAGES:
        assert entry.name in SECTIONS
        for param in entry.reads:  # a whole section, or one of its keys
            section, _, key = param.partition(".")
            assert section in SECTIONS and (not key or key in type(Config().section(section))
                                            .model_fields), param
    assert [s.name for s in STAGES if s.changes_state] == ["ingest", "promote"]
    code = Path(__file__).resolve().parents[2]
    for entry in STAGES:  # dvc.yaml's code deps name real files and folders of the repository
        assert all((code / dep).exists() for dep in entry.code_deps), entry.code_deps
    assert pure_names() == ["validate", "preprocess", "train", "compress", "evaluate"]


def test_dvc_yaml_is_the_registry(tmp_path):
    from evergreen.dvcfile import dvc_yaml

    declared = yaml.safe_load(dvc_yaml(tmp_path))["stages"]
    assert list(declared) == pure_names()
    for name, entry in declared.items():
        assert entry["cmd"] == f"evergreen stage {name}"
        assert entry["params"] == stage(name).params
        assert entry["deps"] == list(stage(name).deps)  # code lives outside tmp_path
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in entry.get("outs", [])]
        assert outs == [*stage(name).outs, *stage(name).reports]


def test_cli_flows_and_mains_are_the_registry():
    from app.cli import build_parser
    from flows.training import PIPELINE, ingest_task, promote_task

    assert [name for name, _ in PIPELINE] == pure_names()
    for name, task in PIPELINE:
        assert task.name == name and task.retries == stage(name).retries
    assert (ingest_task.name, promote_task.name) == ("ingest", "promote")
    assert ingest_task.retries == stage("ingest").retries
    for entry in STAGES:  # one main per stage, in mains/<stage>.py, taking its own section
        main = load_main(entry)
        assert main.__module__ == f"mains.{entry.name}" and main.__name__ == f"run_{entry.name}"
        params = list(inspect.signature(main).parameters.values())
        assert params[1].name == "section" and params[1].annotation == entry.section.__name__
        assert {p.name for p in params} >= {read.split(".")[-1] for read in entry.reads}
    parser = build_parser()
    assert parser.parse_args(["stage", "compress"]).name == "compress"
    with pytest.raises(SystemExit):
        parser.parse_args(["stage", "promote"])  # changes state: not a dvc.yaml stage


def test_a_main_receives_its_own_section_and_what_it_declares(monkeypatch):
    from evergreen.config import Config
    from mains import call_main

    seen = {}
    monkeypatch.setattr(registry, "load_main", lambda entry: lambda ws, section, **kw: seen.update(
        ws=ws, section=section, **kw) or {})
    cfg = Config()
    call_main("compress", "WS", cfg)
    assert seen == {"ws": "WS", "section": cfg.compress, "candidate": cfg.promote.candidate}
    seen.clear()
    call_main("ingest", "WS", cfg, source="digits")
    assert seen == {"ws": "WS", "section": cfg.ingest, "validate": cfg.validate_, "source": "digits"}


def test_adding_a_stage_is_one_entry(monkeypatch, tmp_path):
    """A new pure stage in the registry alone reaches dvc.yaml, the CLI and the override plan."""
    from app.cli import build_parser
    from evergreen.dvcfile import dvc_yaml

    extra = Stage("report", "mains.evaluate:run_evaluate", deps=("reports/metrics.json",),
                  reports=("reports/extra.json",))
    monkeypatch.setattr(registry, "STAGES", (*STAGES[:-1], extra, STAGES[-1]))
    declared = yaml.safe_load(dvc_yaml(tmp_path))["stages"]
    assert list(declared)[-1] == "report" and declared["report"]["params"] == ["report"]
    assert build_parser().parse_args(["stage", "report"]).name == "report"
    with pytest.raises(KeyError, match="no stage 'nope'"):
        stage("nope")


def test_an_override_reruns_from_the_first_stage_that_reads_it():
    from flows.training import PIPELINE, overridden_from

    order = pure_names()
    assert overridden_from(["train.lr=0.01"]) == order.index("train")
    assert overridden_from(["evaluate.latency_runs=5"]) == order.index("evaluate")
    # compress builds every variant for a student candidate, and evaluate scores the candidate
    assert overridden_from(["promote.candidate=student"]) == order.index("compress")
    assert overridden_from(["promote.min_accuracy=0.9"]) == len(PIPELINE)  # only promote reads it
    assert overridden_from(["validate.min_samples_per_class=3", "compress.epochs=2"]) == 0


def test_stage_entries_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage("train").retries = 3
