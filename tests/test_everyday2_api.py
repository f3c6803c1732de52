"""Everyday use, second pass: the Python API at the top of the package (lazily imported), each
function documented with an example, listed by help(gcpl)."""

from __future__ import annotations

import pydoc
import subprocess
import sys

import gcpl

FUNCTIONS = ("train", "evaluate", "predict", "sample")
CLASSES = ("TrainJob", "EvalJob", "PredictJob", "SampleJob", "TrainConfig", "ClassifyConfig", "TrainedRun")


def test_the_api_is_at_the_top_of_the_package():
    from gcpl.classify import ClassifyConfig
    from gcpl.jobs import evaluate, predict, sample, train
    from gcpl.runs import TrainedRun
    from gcpl.trainer import TrainConfig

    assert gcpl.train is train.train and gcpl.evaluate is evaluate.evaluate
    assert gcpl.predict is predict.predict and gcpl.sample is sample.sample
    assert (gcpl.TrainJob, gcpl.EvalJob, gcpl.PredictJob, gcpl.SampleJob) == (
        train.TrainJob, evaluate.EvalJob, predict.PredictJob, sample.SampleJob)
    assert (gcpl.TrainConfig, gcpl.ClassifyConfig, gcpl.TrainedRun) == (TrainConfig, ClassifyConfig, TrainedRun)
    assert set(FUNCTIONS + CLASSES) <= set(gcpl.__all__) and set(FUNCTIONS + CLASSES) <= set(dir(gcpl))
    from gcpl import api

    assert set(FUNCTIONS + CLASSES) - {"ClassifyConfig"} <= set(api.__all__)


def test_each_function_has_a_docstring_with_an_example():
    for name in FUNCTIONS:
        doc = getattr(gcpl, name).__doc__ or ""
        assert len(doc.splitlines()) > 3, name
        assert "from gcpl import" in doc and f"{name}(" in doc, f"gcpl.{name}: no example in its docstring"


def test_help_lists_the_api():
    text = pydoc.render_doc(gcpl, renderer=pydoc.plaintext)
    functions = text[text.index("\nFUNCTIONS"):]
    for name in FUNCTIONS:
        assert f"\n    {name}(job" in functions, name
    classes = text[text.index("\nCLASSES"):text.index("\nFUNCTIONS")]
    for name in CLASSES:
        assert f"class {name}" in classes, name


def test_import_gcpl_stays_cheap():
    code = "import sys, gcpl; print('torch' in sys.modules, 'gcpl.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
