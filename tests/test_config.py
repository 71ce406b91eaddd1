from pathlib import Path

import pytest

from autodistill import ConfigError, load_config, parse_config
from autodistill._tunable import Choice, FloatRange, IntRange
from autodistill.loading import dump_config

ROOT = Path(__file__).resolve().parents[1]


def test_default_study_file_loads():
    cfg = load_config(ROOT / "search_spaces" / "digits.yaml")
    assert cfg.name == "digits"
    assert cfg.train.lr == FloatRange(1e-3, 2e-2, log=True)
    assert cfg.student.family == Choice(("cnn", "resnet", "mobilenet"))
    assert cfg.student.cnn.depths[0] == IntRange(1, 2)
    assert cfg.objectives == {"accuracy": "max", "params": "min", "latency_ms": "min"}


def test_cifar10_study_file_loads(tmp_path):
    import yaml

    cfg = parse_config(yaml.safe_load((ROOT / "search_spaces" / "cifar10.yaml").read_text()))
    assert cfg.data.dataset == "cifar10"
    (tmp_path / "cifar").mkdir()
    assert load_config(ROOT / "search_spaces" / "cifar10.yaml", {"data.root": str(tmp_path / "cifar")}).data.root == str(tmp_path / "cifar")


def test_yaml_exponent_without_dot_is_a_number():
    # PyYAML reads 1e-3 as a string; users write it that way.
    cfg = parse_config({"train": {"lr": "1e-3", "weight_decay": {"low": "1e-5", "high": "1e-3", "log": True}}})
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.weight_decay == FloatRange(1e-5, 1e-3, log=True)


def test_dump_then_parse_round_trips():
    cfg = load_config(ROOT / "search_spaces" / "digits.yaml")
    import yaml

    again = parse_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_overrides_set_dotted_keys(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\n")
    cfg = load_config(path, {"search.trials": 3, "execution.results": str(tmp_path)})
    assert cfg.search.trials == 3
    assert cfg.results_dir == tmp_path / "s"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"train": {"lr": {"low": 2, "high": 1}}}, "train.lr: low (2) is greater than high (1)"),
        ({"train": {"lr": {"low": 0, "high": 1, "log": True}}}, "train.lr: must be > 0, got 0"),
        ({"distill": {"alpha": {"low": 0, "high": 1, "log": True}}}, "distill.alpha: log: true needs low > 0"),
        ({"distill": {"alpha": {"choice": []}}}, "distill.alpha: choice must be a non-empty list"),
        ({"student": {"cnn": {"foo": 1}}}, "student.cnn.foo: unknown key; valid keys: widths, depths, width_mult, dropout"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"student": {"family": "vgg"}}, "student.family: unknown value 'vgg'"),
        ({"distill": {"feature_stages": "first"}}, "distill.feature_stages: expected last, all or indices like '1,2', got 'first'"),
        ({"distill": {"feature_weight": 1.0}, "teacher": {"arch": "torchvision:resnet18"}}, "torchvision teachers do not give"),
        ({"distill": {"attention_weight": {"choice": [0, 1]}}, "compress": {"prune_rate": 0.3}}, "cannot be combined with compress"),
        ({"distill": {"attention_type": "matrix"}}, "distill.attention_type: matrix matches self-attention matrices, so the teacher must be a vit"),
        ({"distill": {"alpha_end": {"choice": [None, 2.0]}}}, "distill.alpha_end: must be <= 1, got 2"),
        ({"distill": {"temperature": {"schedule": "exp"}}}, "distill.temperature.schedule: unknown value 'exp'"),
        ({"augment": {"cutmix": 1.0}}, "mixup and cutmix make images no cached view holds"),
        ({"teachers": []}, "teachers: expected a non-empty list"),
        ({"teachers": [{"arch": {"family": "cnn"}}], "teacher": {"arch": {"family": "resnet"}}}, "set teacher or teachers, not both"),
        ({"teachers": [{"arch": {"family": "cnn"}, "weight": 0}]}, "teachers[0].weight"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected an integer, got 'ten'"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer, got 2.5"),
        ({"objectives": {"acc": "max"}}, "objectives: unknown metric 'acc'"),
        ({"objectives": {"accuracy": "up"}}, "objectives.accuracy"),
        ({"search": {"sampler": "cmaes"}}, "search.sampler"),
        ({"data": {"dataset": "svhn"}}, "data.dataset"),
        ({"data": {"dataset": "mnist"}}, "needs data.root"),
        ({"student": {"cnn": {"widths": [8, 16], "depths": [1]}}}, "widths has 2 stages but depths has 1"),
        ({"teacher": {"arch": {"family": "cnn", "width_mult": {"low": 0.5, "high": 1}}}}, "teacher.arch"),
        ({"teacher": {"arch": "resnet18"}}, "teacher.arch: expected {family: ..., <dims>} or 'torchvision:<model>'"),
        ({"teacher": {"arch": "torchvision:resnet"}}, "unknown torchvision classification model 'resnet'"),
        ({"train": {"optimizer": {"choice": ["adamw", "lion"]}}}, "train.optimizer: unknown value 'lion'"),
        ({"train": {"lr": {"low": 1e-3, "high": 1e-2, "log": True, "step": 1e-3}}}, "log and step cannot be used together"),
        ({"train": {"lr": {"low": 1e-3}}}, "train.lr: expected a fixed value, {low, high[, log, step]} or {choice: [...]}"),
        ({"name": "a b"}, "name"),
    ],
)
def test_bad_values_give_one_line_naming_the_field(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "s.yaml")
    message = str(info.value)
    assert message.startswith("s.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML syntax error at line"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar)


def test_yaml_cannot_run_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_config(evil)


def test_driver_side_paths_are_checked_by_load_config_not_by_the_model(tmp_path):
    from autodistill.loading import check_paths

    raw = {"teacher": {"checkpoint": "/does/not/exist.pt"}}
    cfg = parse_config(raw)  # a trial re-validates its config on a worker, which may not see the file
    with pytest.raises(ConfigError, match="s.yaml: teacher.checkpoint: file not found: /does/not/exist.pt"):
        check_paths(cfg, "s.yaml")
    path = tmp_path / "s.yaml"
    path.write_text("data: {dataset: mnist, root: /nope/mnist}\n")
    with pytest.raises(ConfigError, match=r"data.root: directory not found: /nope/mnist"):
        load_config(path)


def test_recipe_fields_parse_fixed_null_and_searched():
    cfg = parse_config(
        {
            "distill": {"alpha_end": {"choice": [None, 0.3]}, "ce_weight": None, "feature_weight": {"low": 0, "high": 2}},
            "teachers": [{"arch": {"family": "cnn"}}, {"arch": {"family": "vit", "depth": 2}, "weight": 0.5}],
        }
    )
    assert cfg.distill.alpha_end == Choice((None, 0.3)) and cfg.distill.ce_weight is None
    assert cfg.distill.needs_teacher_features and cfg.teacher.arch["family"] == "cnn"
    assert [t.weight for t in cfg.all_teachers] == [1.0, 0.5]
    assert parse_config(dump_config(cfg) and __import__("yaml").safe_load(dump_config(cfg))).all_teachers[1].arch["family"] == "vit"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml")))
def test_every_shipped_study_file_loads_and_has_a_search_space(name, tmp_path):
    from autodistill.space import search_space

    overrides = {"data.root": str(tmp_path)} if name == "cifar10.yaml" else {}
    config = load_config(ROOT / "search_spaces" / name, overrides)
    assert config.name and config.search.trials >= 1
    assert search_space(config), f"{name}: nothing is searched"
