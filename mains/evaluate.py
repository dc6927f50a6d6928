"""evaluate's main: the teacher, the student and the selected variant on the test split."""

from __future__ import annotations

from evergreen.config import EvaluateConfig
from evergreen.workspace import Workspace, read_json, write_json
from mains.processed import load_split, read_meta


def run_evaluate(ws: Workspace, section: EvaluateConfig, candidate: str) -> dict:
    """Every model on the test split beside the null model; metrics and figures of the candidate."""
    from mains.figures import write_evaluation_plots, write_prediction_plots
    from nets.io import load_model, model_file
    from tasks.evaluate import evaluate_model, null_model, predict_proba
    from tasks.promote import summary_row

    meta = read_meta(ws)
    test, train = load_split(ws, "test"), load_split(ws, "train")
    null, null_pred = null_model(train, test, meta["classes"], (meta["mean"], meta["std"]),
                                 section)
    results = {}
    for role in ("teacher", "student", "selected"):
        model_dir = ws.model_dir(role)
        if role != "teacher" and not (model_dir / "model.json").exists():
            continue  # no student trained (compress.build: lazy), or no selection yet
        # the selected model is judged as it is served: from its ONNX export
        model, card = load_model(model_dir, prefer_onnx=role == "selected")
        served = model_dir / "model.onnx" if role == "selected" else model_file(model_dir)
        results[role] = {"arch": card["arch"],
                         "method": card.get("compression", {}).get("method", "none"),
                         **evaluate_model(model, card, served, test, section, null_pred)}
        if role == "selected":
            selection = read_json(model_dir / "selection.json")
            results[role].update(variant=selection["variant"], selection=selection["reason"],
                                 fits_budget=selection["fits_budget"], params=selection["params"],
                                 fallback=selection.get("fallback", "none"))
        if role == candidate:  # its test probabilities feed ROC and sample plots
            candidate_proba = predict_proba(model, card, test[0])
    results["null_model"] = null
    metrics = {"candidate": candidate, **summary_row(results[candidate]),
               "per_class_recall": results[candidate]["per_class_recall"], **results}
    write_json(ws.reports / "metrics.json", metrics)
    write_evaluation_plots(ws.reports, results[candidate], meta["classes"])
    write_prediction_plots(ws.reports, test, candidate_proba, meta["classes"])
    return {"candidate": candidate, **summary_row(results[candidate]),
            "null_accuracy": results["null_model"]["accuracy"]}
