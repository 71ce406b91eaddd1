"""Bad input through the real CLI (in process): every case is one line naming the field,
value or file, exit code 2, no traceback, and nothing written under results/."""

import importlib.util

import pytest
from helpers import check_one_line_error, small_study
from typer.testing import CliRunner

from autodistill.cli import app

# (dotted overrides of the small study, text expected in the error)
OVERRIDES = [
    ({"train.epochs": "ten"}, "train.epochs: expected an integer, got 'ten'"),
    ({"train.epochs": 2.5}, "train.epochs: expected an integer, got 2.5"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"student.cnn.kernel": 5}, "student.cnn.kernel: unknown key"),
    ({"train.lr": {"low": 1, "high": 0.1}}, "train.lr: low (1) is greater than high (0.1)"),
    ({"train.lr": {"low": 0, "high": 0.1, "log": True}}, "train.lr"),
    ({"distill.alpha": {"low": 0.0, "high": 0.5, "log": True}}, "distill.alpha: log: true needs low > 0"),
    ({"distill.alpha": {"choice": []}}, "distill.alpha: choice must be a non-empty list"),
    ({"distill.alpha": 1.5}, "distill.alpha"),
    ({"distill.alpha": {"low": 0.1}}, "distill.alpha"),
    ({"data.dataset": "svhn"}, "data.dataset"),
    ({"student.family": "vgg"}, "student.family: unknown value 'vgg'"),
    ({"student.family": {"choice": ["cnn", "vgg"]}}, "student.family"),
    ({"search.sampler": "grid"}, "search.sampler"),
    ({"search.pruner": "median"}, "search.pruner: median is an Optuna pruner, which needs objectives to be accuracy alone"),
    ({"search.pruner": "bohb"}, "search.pruner"),
    ({"search.early_stopping.reduction_factor": 1}, "search.early_stopping.reduction_factor"),
    ({"search.pruner": "pareto", "objectives": {"params": "min", "latency_ms": "min"}}, "search.pruner: pareto ranks trials by accuracy"),
    ({"distill.loss": "mse"}, "distill.loss: unknown key"),
    ({"teacher.checkpoint": "/nope/teacher.pt"}, "teacher.checkpoint: file not found: /nope/teacher.pt"),
    ({"objectives": {"accuracy": "max", "flops": "min"}}, "objectives"),
    ({"objectives": {"accuracy": "up"}}, "objectives"),
    ({"objectives": {}}, "objectives"),
    ({"search.trials": -1}, "search.trials"),
    ({"search.max_concurrent": 0}, "search.max_concurrent"),
    ({"latency.device": "tpu"}, "latency.device"),
    ({"distill.temperature.schedule": "exponential"}, "distill.temperature.schedule"),
    ({"student.cnn.width_mult": -0.5}, "student.cnn.width_mult"),
    ({"student.cnn.widths": [8, 16, 32]}, "student.cnn: widths has 3 stages but depths has 2"),
    ({"data.dataset": "mnist", "data.root": "/nope/mnist"}, "/nope/mnist"),
    ({"data.dataset": "mnist"}, "data.root"),
    ({"train.lr": {"low": 0.001, "high": 0.01, "step": 0.1}}, "train.lr"),
    ({"compress.prune_rate": 1.5}, "compress.prune_rate: must be <= 0.9, got 1.5"),
    ({"compress.quantize": "int4"}, "compress.quantize: unknown value 'int4'"),
    ({"compress.importance": {"choice": ["l1", "hessian"]}}, "compress.importance: unknown value 'hessian'"),
    ({"compress.prune_rate": 0.5, "compress.prune_steps": 3}, "compress.prune_steps (3) needs at least 4 train.epochs"),
    ({"compress.quantize": {"choice": ["none", "qat"]}, "latency.device": "cuda"}, "compress.quantize: int8 models run on the CPU only"),
    ({"compress.quantize": "ptq", "compress.engine": "fbgemm"}, "compress.engine: unknown value 'fbgemm'"),
    (
        {"compress.quantize": "ptq", "compress.engine": "x86", "latency.backend": "executorch"},
        "latency.backend: executorch runs int8 students of compress.engine: xnnpack (got x86",
    ),
    (
        {"compress.quantize": "ptq", "compress.engine": "onnxruntime", "latency.backend": "torch_compile"},
        "latency.backend: torch_compile lowers int8 students of compress.engine: x86 (got onnxruntime",
    ),
    (
        {"compress.quantize": "ptq", "compress.engine": "xnnpack", "latency.backend": "torch_compile"},
        "latency.backend: torch_compile lowers int8 students of compress.engine: x86",
    ),
    ({"latency.backend": "executorch", "latency.device": "cuda"}, "latency.backend: executorch measures on the CPU here"),
    ({"compress.prune_stage_rates": [0.5]}, "compress.prune_stage_rates has 1 rates but student.cnn has 2 stages"),
    ({"compress.prune_backend": "nni", "compress.importance": "bn_scale"}, "importance 'bn_scale' is not available with prune_backend nni"),
    ({"compress.engine": "tensorrt"}, "compress.engine: unknown value 'tensorrt'"),
    ({"compress.reduce_range": "maybe"}, "compress.reduce_range: expected auto, true or false, got 'maybe'"),
    ({"latency.backend": "tflite"}, "latency.backend"),
    ({"constraints": {"flops": {"max": 1}}}, "constraints: unknown metric 'flops'"),
    ({"constraints": {"params": {"min": 5, "max": 1}}}, "constraints.params: min (5) is greater than max (1)"),
    ({"constraints": {"latency_ms": {}}}, "constraints.latency_ms: give min, max or both"),
    ({"search.points_to_evaluate": [{"distill.beta": 0.5}]}, "search.points_to_evaluate[0]: 'distill.beta' is not a searched dimension"),
    ({"search.points_to_evaluate": [{"distill.alpha": 1.5}]}, "search.points_to_evaluate[0]: distill.alpha = 1.5 is outside float [0.3, 0.9]"),
    (
        {"search.points_to_evaluate": [{"student.family": "resnet"}]},
        "search.points_to_evaluate[0]: student.family = 'resnet' is outside choice {cnn, mobilenet}",
    ),
]
OVERRIDES += [
    ({"search.epoch_budget": 0}, "search.epoch_budget"),
    (
        {"augment.flip": {"choice": [True, False]}},
        "augment: with teacher: views the teacher's outputs are cached once per study, so crop_padding and flip must be fixed",
    ),
    ({"augment.teacher": "sometimes"}, "augment.teacher"),
    ({"augment.crop_padding": 40}, "augment.crop_padding"),
]
# found once the data is loaded: `search` only
SEARCH_ONLY = [
    ({"augment.flip": True}, "augment.crop_padding / augment.flip need images of at least 16 px; this dataset's are 8 px"),
]
try:
    import torch

    if not torch.cuda.is_available():
        SEARCH_ONLY.append(({"search.resources.gpu": 0.25}, "search.resources.gpu is 0.25 but no CUDA GPU is visible here"))
except ImportError:  # pragma: no cover
    pass
if importlib.util.find_spec("nni") is None:  # the optional extra: its absence is caught before anything starts
    OVERRIDES.append(({"compress.prune_backend": "nni"}, "compress.prune_backend: nni is not installed; pip install 'autodistill[nni]'"))

# (file content, text expected in the error)
FILES = [
    ("name: x\ntrain: {lr: [1, 2\n", "YAML syntax error at line"),
    ("", "the file is empty"),
    ("- a\n- b\n", "expected a mapping of sections at the top level, got list"),
    ("name: x\ntrain:\n  lr: 0.1\n   epochs: 3\n", "YAML syntax error"),
    (b"\xff\xfe\x00bin", "not a text file"),
]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


_check = check_one_line_error


@pytest.mark.parametrize("command", ["validate", "search"])
@pytest.mark.parametrize("overrides, expected", OVERRIDES, ids=[e for _, e in OVERRIDES])
def test_malformed_config(tmp_path, overrides, expected, command):
    _check(_invoke(command, small_study(tmp_path, **overrides)), expected, tmp_path)


@pytest.mark.parametrize("overrides, expected", SEARCH_ONLY, ids=[e for _, e in SEARCH_ONLY])
def test_malformed_for_the_data(tmp_path, overrides, expected):
    _check(_invoke("search", small_study(tmp_path, **overrides)), expected, tmp_path)


@pytest.mark.parametrize("content, expected", FILES, ids=[e for _, e in FILES])
def test_malformed_file(tmp_path, content, expected):
    path = tmp_path / "s.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for command in ("validate", "search"):
        result = _invoke(command, path)
        _check(result, expected, tmp_path)
        assert str(path) in result.stderr


def test_missing_file_and_directory_instead_of_file(tmp_path):
    _check(_invoke("search", tmp_path / "nope.yaml"), f"{tmp_path / 'nope.yaml'}: file not found", tmp_path)
    _check(_invoke("search", tmp_path), f"{tmp_path}: is a directory, expected a YAML file", tmp_path)


def test_resume_show_export_of_something_that_is_not_a_study(tmp_path):
    _check(_invoke("resume", tmp_path / "nope"), "no such results directory", tmp_path)
    (tmp_path / "empty").mkdir()
    _check(_invoke("resume", tmp_path / "empty"), "config.yaml: not found", tmp_path)
    _check(_invoke("show", tmp_path / "empty"), "study.json: not found", tmp_path)
    _check(_invoke("export", tmp_path / "nope"), "no such results directory", tmp_path)
    _check(_invoke("export", tmp_path / "empty"), "study.json: not found", tmp_path)


def test_at_least_25_malformed_inputs():
    assert len(OVERRIDES) + len(FILES) >= 25
