"""Compression: structural pruning really shrinks the student, the spec rebuilds it exactly,
INT8 is really int8, and a study with compression in its space measures the compressed
students (params, size, latency, accuracy of the network that is saved and exported)."""

import copy
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_cli, small_study

from autodistill._errors import ConfigError
from autodistill.compress import Compression, build_network, prune_schedule
from autodistill.compress.prune import step_ratio
from autodistill.compress.quantize import is_quantized
from autodistill.config import LatencyConfig, parse_config
from autodistill.data import load_dataset
from autodistill.distill import evaluate, train
from autodistill.measure import count_params, measure_latency, state_dict_mb, static_costs
from autodistill.students import build_student, make_spec

INPUT = (1, 8, 8)


@pytest.fixture(scope="module")
def data():
    return load_dataset(parse_config({}).data)


def _setup(data, family, epochs=4, dims=None, **compress):
    cfg = parse_config({"student": {"family": family, family: dims or {}}, "compress": compress, "train": {"epochs": epochs, "lr": 0.01}})
    spec = make_spec(family, getattr(cfg.student, family).model_dump(mode="json"), data)
    model = build_student(spec)
    return cfg, spec, model, Compression(cfg.compress, spec, epochs, data, cfg.train.batch_size, model)


def _rebuilt(compression):
    """The final network rebuilt from its spec and state dict, as results/export do."""
    spec = json.loads(json.dumps(compression.compressed_spec()))  # through JSON, as spec.json
    rebuilt = build_network(spec)
    rebuilt.load_state_dict(compression.model.state_dict())
    return rebuilt.eval()


# --- schedules (values by hand) ------------------------------------------------------------
def test_step_ratios_remove_equal_shares_of_the_original_channels():
    assert step_ratio(0.5, 1, 1) == pytest.approx(0.5)
    # 3 steps to 0.6: keep 1 -> 0.8 -> 0.6 -> 0.4 of the original
    ratios = [step_ratio(0.6, j, 3) for j in (1, 2, 3)]
    assert ratios == pytest.approx([0.2, 0.25, 1 / 3])
    kept = 1.0
    for r in ratios:
        kept *= 1 - r
    assert kept == pytest.approx(0.4)


def test_prune_and_qat_schedule():
    cfg = lambda **kw: parse_config({"compress": kw}).compress  # noqa: E731
    assert prune_schedule(cfg(prune_rate=0.5, prune_at=0.3), 10) == ([4], None)
    assert prune_schedule(cfg(prune_rate=0.5, prune_at=0.0), 10) == ([1], None)  # at initialisation
    assert prune_schedule(cfg(prune_rate=0.5, prune_at=0.3, prune_steps=3), 10) == ([4, 5, 6], None)
    # moved earlier so that one epoch fine-tunes after the last step
    assert prune_schedule(cfg(prune_rate=0.5, prune_at=0.9, prune_steps=3), 10) == ([7, 8, 9], None)
    assert prune_schedule(cfg(quantize="qat", qat_start=0.5), 10) == ([], 6)
    assert prune_schedule(cfg(quantize="qat", qat_start=0.0), 10) == ([], 1)
    # QAT never starts before pruning is done
    assert prune_schedule(cfg(prune_rate=0.5, prune_at=0.8, quantize="qat", qat_start=0.2), 10) == ([9], 9)
    assert prune_schedule(cfg(), 10) == ([], None)


# --- pruning ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["resnet", "mobilenet", "cnn"])
def test_pruning_at_half_keeps_a_quarter_to_sixty_percent_and_still_trains(data, family):
    cfg, spec, model, compression = _setup(data, family, epochs=4, prune_rate=0.5, prune_at=0.25)
    before = count_params(model)
    history = train(model, data, cfg.train, seed=0, compression=compression)
    pruned = compression.model
    kept = count_params(pruned) / before
    assert 0.25 <= kept <= 0.60, kept
    assert compression.layers, "no layer changed shape"
    # the channels are gone from the tensors themselves, not masked
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(c.weight.numel() for c in convs) < 0.6 * sum(m.weight.numel() for m in build_student(spec).modules() if isinstance(m, torch.nn.Conv2d))
    # forward/backward still work, and the pruned network went on learning after the cut (epoch 2 on)
    out = pruned(data.normalize(data.x_train[:16]))
    out.sum().backward()
    assert out.shape == (16, 10)
    assert all(torch.isfinite(torch.tensor(h.loss)) for h in history)
    assert history[-1].accuracy > 0.6
    assert history[-1].loss < history[1].loss  # fine-tuning after the cut lowers the loss
    assert static_costs(compression.float_model(), INPUT)["macs"] < static_costs(build_student(spec), INPUT)["macs"]


@pytest.mark.parametrize("importance", ["l1", "l2", "fpgm", "taylor", "bn_scale", "random"])
def test_every_importance_prunes_and_the_spec_rebuilds_it_exactly(data, importance):
    cfg, spec, model, compression = _setup(data, "resnet", epochs=2, prune_rate=0.5, prune_at=0.5, importance=importance)
    train(model, data, cfg.train, seed=0, compression=compression)
    assert count_params(compression.model) < 0.6 * count_params(build_student(spec))
    rebuilt = _rebuilt(compression)
    x = data.normalize(data.x_val)
    compression.model.eval()
    assert torch.equal(rebuilt(x), compression.model(x))


def test_importance_decides_which_channels_go(data):
    kept = {}
    for importance in ("l1", "random"):
        cfg, spec, model, compression = _setup(data, "cnn", epochs=2, prune_rate=0.5, prune_at=0.5, importance=importance)
        train(model, data, cfg.train, seed=0, compression=compression)
        kept[importance] = compression.model.state_dict()["stem.0.weight"]
    assert kept["l1"].shape == kept["random"].shape and not torch.equal(kept["l1"], kept["random"])


def test_per_stage_rates_and_global_ranking(data):
    _, spec, model, compression = _setup(data, "cnn", epochs=2, prune_stage_rates=[0.0, 0.0, 0.5], prune_at=0.5)
    compression.before_epoch(compression.prune_epochs[0])
    widths = [stage[0][0].out_channels for stage in compression.model.stages]
    assert widths == [16, 32, 32]  # only the last stage lost half its channels
    _, spec, model, compression = _setup(data, "cnn", epochs=2, prune_rate=0.5, prune_global=True, prune_at=0.5)
    compression.before_epoch(compression.prune_epochs[0])
    assert count_params(compression.model) < 0.8 * count_params(build_student(spec))


def test_round_to_keeps_channel_counts_a_multiple(data):
    _, spec, model, compression = _setup(data, "resnet", epochs=2, prune_rate=0.3, prune_at=0.5, round_to=8)
    compression.before_epoch(compression.prune_epochs[0])
    counts = {m.out_channels for m in compression.model.modules() if isinstance(m, torch.nn.Conv2d)}
    assert counts == {8, 24, 48}  # floor(0.7 x 16, 32, 64) = 11, 22, 44 -> nearest multiples of 8


def test_iterative_pruning_reaches_the_one_shot_size(data):
    sizes = []
    for steps in (1, 3):
        cfg, spec, model, compression = _setup(data, "cnn", epochs=4, prune_rate=0.5, prune_at=0.0, prune_steps=steps)
        train(model, data, cfg.train, seed=0, compression=compression)
        sizes.append(count_params(compression.model))
    assert sizes[1] == pytest.approx(sizes[0], rel=0.15)


def test_pruned_qat_training_continues_from_an_epoch_checkpoint_exactly(data):
    """The epoch checkpoint of a pruned, QAT-prepared student rebuilds it: continuing from
    epoch 3 gives the same int8 network as the uninterrupted run. Dropout draws from the
    RNG, and each epoch's report builds the pruned network for its costs (as a trial does):
    that must not move the training RNG."""
    compress = dict(prune_rate=0.5, prune_at=0.25, prune_steps=2, quantize="qat", qat_start=0.5)
    dims = {"dropout": 0.2}
    cfg, spec, model, whole = _setup(data, "resnet", epochs=5, dims=dims, **compress)
    states = []
    history = train(
        model, data, cfg.train, seed=1, compression=whole, on_checkpoint=lambda s: states.append(copy.deepcopy(s)), on_epoch=lambda _: whole.float_model()
    )
    assert states[2]["compress"]["qat"] and states[2]["compress"]["layers"]
    cfg, spec, model, continued = _setup(data, "resnet", epochs=5, dims=dims, **compress)
    rest = train(model, data, cfg.train, seed=1, compression=continued, resume=states[2], on_epoch=lambda _: continued.float_model())
    assert [h.accuracy for h in rest] == [h.accuracy for h in history]
    a, b = whole.finish(), continued.finish()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        assert torch.equal(va, vb), ka


# --- quantization ----------------------------------------------------------------------------
def test_ptq_is_int8_a_third_of_the_size_and_rebuilds_exactly(data):
    cfg, spec, model, compression = _setup(data, "resnet", epochs=3, quantize="ptq")
    train(model, data, cfg.train, seed=0, compression=compression)
    float_acc, float_mb = evaluate(compression.model, data, "val"), state_dict_mb(compression.model)
    q = compression.finish()
    assert is_quantized(q)
    # every convolution and the classifier read int8 weights (dequantized per channel); no float weight is left
    weights = {k: v for k, v in q.state_dict().items() if v.dim() >= 2}
    convs = [m for m in build_student(spec).modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(weights) == len(convs) and all(v.dtype == torch.int8 for v in weights.values())
    ops = {str(n.target) for n in q.graph.nodes if n.op == "call_function"}
    assert {"quantized_decomposed.quantize_per_tensor.default", "quantized_decomposed.dequantize_per_channel.default"} <= ops
    assert state_dict_mb(q) < 0.35 * float_mb
    assert evaluate(q, data, "val") > float_acc - 0.03  # calibrated: int8 costs little accuracy
    rebuilt = _rebuilt(compression)
    x = data.normalize(data.x_val)
    assert torch.equal(rebuilt(x), q(x))


def test_qat_trains_with_fake_quantization_and_ends_int8(data):
    cfg, spec, model, compression = _setup(data, "cnn", epochs=4, quantize="qat", qat_start=0.5)
    history = train(model, data, cfg.train, seed=0, compression=compression)
    assert compression.qat
    assert any("FakeQuantize" in type(m).__name__ for m in compression.model.modules())  # torchao's, in the PT2E graph
    q = compression.finish()
    assert is_quantized(q)
    # the int8 network agrees with the last fake-quantized evaluation
    assert abs(evaluate(q, data, "val") - history[-1].accuracy) < 0.02


def test_qat_evaluation_does_not_move_the_quantization_ranges(data):
    cfg, spec, model, compression = _setup(data, "cnn", epochs=2, quantize="qat", qat_start=0.0)
    compression.before_epoch(1)
    from autodistill.compress import observers_frozen

    compression.model.train()
    compression.model(data.normalize(data.x_train[:64]))  # a training step observes the ranges
    before = copy.deepcopy(compression.model.state_dict())
    with observers_frozen(compression.model):
        evaluate(compression.model, data, "val")
    after = compression.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_int8_onnx_check_passes_rounding_and_fails_a_wrong_file():
    from autodistill.tasks.image_classification.export import _compare

    rng = np.random.default_rng(0)
    step = 0.05
    reference = np.round(rng.normal(size=(400, 10)) / step) * step  # (N, K) int8-valued logits
    y = reference.argmax(axis=1)
    # requantization rounding: 5% of the logits one step off, a couple of near-ties flip
    rounding = reference + step * (rng.random(reference.shape) < 0.05) * rng.choice([-1, 1], reference.shape)
    ok = _compare(rounding, reference, y, 1.0, step)
    assert ok["failed"] is None and ok["top1_agreement"] >= 0.97 and ok["mean_abs_diff_steps"] < 0.1
    # the exact check stays exact for float files
    assert "logits differ" in _compare(rounding, reference, y, 1.0, None)["failed"]
    # a wrong scale: every logit off by several steps
    assert "quantization steps" in _compare(reference * 1.5, reference, y, 1.0, step)["failed"]
    # a different network: the top-1 class changes on many samples
    shuffled = reference[rng.permutation(len(reference))]
    assert _compare(shuffled, reference, y, 1.0, step)["failed"]


BACKEND_ENGINE = {"torch": "x86", "torch_compile": "x86", "torchscript": "x86", "onnxruntime": "onnxruntime", "executorch": "xnnpack"}


@pytest.mark.parametrize(
    # slow: ExecuTorch's lowering takes seconds per network; its runtime runs an int8 network in the test after this one
    "backend",
    [pytest.param(b, marks=pytest.mark.slow) if b == "executorch" else b for b in BACKEND_ENGINE],
)
def test_latency_backends_time_the_network_they_are_given(data, backend):
    """Each backend times the model it is handed, float and int8 (of the engine it runs): a
    student with 16x the MACs is slower at batch 32 (a backend that timed a cached or empty
    graph would not see the difference)."""
    small = make_spec("cnn", {"widths": [8, 16], "depths": [1, 1]}, data)
    big = make_spec("cnn", {"widths": [32, 64], "depths": [2, 2]}, data)
    latency = LatencyConfig(backend=backend, batch_size=32, warmup=3, repeats=15)
    times = {name: measure_latency(build_student(spec, seed=0), INPUT, latency).median_ms for name, spec in (("small", small), ("big", big))}
    assert 0 < times["small"] < times["big"], times
    cfg, spec, model, compression = _setup(data, "cnn", epochs=2, prune_rate=0.5, prune_at=0.0, quantize="ptq", engine=BACKEND_ENGINE[backend])
    train(model, data, cfg.train, seed=0, compression=compression)
    q = compression.finish()
    lat = measure_latency(q, INPUT, LatencyConfig(backend=backend, warmup=2, repeats=5))
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms < 1000


def test_each_runtime_runs_the_int8_network_it_is_given(data, tmp_path):
    """The int8 network's ONNX file (QDQ, every engine's) and ExecuTorch program (engine
    xnnpack) agree with the PyTorch module within a quantization step and give its accuracy;
    ``engine: auto`` picks the quantizer of the timed runtime, and ``reduce_range: auto``
    7-bit weights for ONNX Runtime's. On an x86 CPU without VNNI the 8-bit engines are
    checked with 7-bit weights too (ONNX Runtime saturates 8-bit ones there: 2.6-9.4 steps
    off on an AMD EPYC)."""
    assert [parse_config({"latency": {"backend": b}}).compress.engine for b in ("onnxruntime", "executorch", "torch_compile", "torch")] == [
        "onnxruntime",
        "xnnpack",
        "x86",
        "x86",
    ]
    from autodistill._executorch import load_method, run_batched, save_pte
    from autodistill._onnx import ort_session, save_onnx
    from autodistill.compress.quantize import REDUCED_WEIGHTS, output_step
    from autodistill.measure import saturating_int8_cpu

    x = data.normalize(data.x_val)
    y = data.y_val.numpy()
    saturates = saturating_int8_cpu()  # x86 without VNNI: ONNX Runtime needs 7-bit weights to agree
    for engine in ("x86", "onnxruntime", "xnnpack"):
        reduce_range = parse_config({"compress": {"engine": engine}}).compress.reduce_range
        assert reduce_range == (engine == "onnxruntime")  # auto
        reduce_range = reduce_range or saturates
        cfg, spec, model, compression = _setup(data, "resnet", epochs=3, quantize="ptq", engine=engine, reduce_range=reduce_range)
        train(model, data, cfg.train, seed=0, compression=compression)
        q = compression.finish()
        assert compression.compressed_spec()["compress"]["quantize"].get("reduce_range", False) == reduce_range
        widest = max(int(t.abs().max()) for t in q.state_dict().values() if t.dtype == torch.int8)
        assert widest == REDUCED_WEIGHTS[1] if reduce_range else widest > 100, (engine, widest)
        step = output_step(q)
        with torch.no_grad():
            reference = q(x).numpy()
        save_onnx(q, x[:2], tmp_path / f"{engine}.onnx")
        outputs = {"onnx": ort_session(tmp_path / f"{engine}.onnx").run(["logits"], {"input": x.numpy()})[0]}
        if engine == "xnnpack":
            save_pte(q, x[:1], tmp_path / "q.pte")
            outputs["executorch"] = run_batched(load_method(tmp_path / "q.pte"), x.numpy(), 1)
        for name, logits in outputs.items():
            assert np.abs(logits - reference).mean() < step, (engine, name)
            assert (logits.argmax(1) == y).mean() == pytest.approx((reference.argmax(1) == y).mean(), abs=0.02), (engine, name)


def test_reduce_range_and_the_cpus_whose_int8_kernels_saturate(monkeypatch):
    """``reduce_range: auto`` gives ONNX Runtime's engine 7-bit weights and the others 8; the
    saturating CPUs are x86 ones without VNNI, and an ONNX check that fails on one for 8-bit
    weights says why and what to do."""
    from autodistill.measure import saturating_int8_cpu
    from autodistill.tasks.image_classification import export

    resolved = {
        (b, r): parse_config({"latency": {"backend": b}, "compress": {"reduce_range": r}}).compress.reduce_range
        for b in ("onnxruntime", "executorch", "torch")
        for r in ("auto", True, False)
    }
    assert resolved == {(b, r): (b == "onnxruntime") if r == "auto" else r for b, r in resolved}
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert saturating_int8_cpu("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    assert not saturating_int8_cpu("flags\t\t: fpu avx2 avx512f avx512_vnni\n") and not saturating_int8_cpu("flags : avx2 avx_vnni\n")
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    assert not saturating_int8_cpu("flags : fp asimd\n")
    int8 = {"compress": {"quantize": {"method": "ptq", "engine": "xnnpack", "flow": "pt2e"}}}
    monkeypatch.setattr(export, "saturating_int8_cpu", lambda: True)
    assert "compress.reduce_range: true" in export._saturation_hint("onnx", int8, True)
    reduced = {"compress": {"quantize": {**int8["compress"]["quantize"], "reduce_range": True}}}
    assert export._saturation_hint("onnx", reduced, True) == export._saturation_hint("executorch", int8, True) == ""
    monkeypatch.setattr(export, "saturating_int8_cpu", lambda: False)
    assert export._saturation_hint("onnx", int8, True) == ""


@pytest.mark.slow
def test_qat_conversion_is_torchao_s_own(data):
    """convert() folds a QAT network's BatchNorm with only the patterns of the convolutions it
    has, each captured once per process: the int8 network is exactly what torchao's own
    convert_pt2e makes (which captures 96 patterns, 15 s here)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from autodistill.compress.quantize import convert, prepare_qat

    for family in ("cnn", "resnet"):
        prepared = prepare_qat(build_student(make_spec(family, {}, data), seed=0), data.normalize(data.x_train[:8]), "x86")
        prepared(data.normalize(data.x_train[:64]))
        prepared.eval()
        ours, theirs = convert(copy.deepcopy(prepared)), convert_pt2e(copy.deepcopy(prepared))
        x = data.normalize(data.x_val)
        assert torch.equal(ours(x), theirs(x)), family


def test_optional_runtimes_are_named_when_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(ConfigError, match=r"latency.backend: executorch needs ExecuTorch.*pip install executorch"):
        parse_config({"latency": {"backend": "executorch"}})
    with pytest.raises(ConfigError, match=r"compress.engine: xnnpack needs ExecuTorch.s quantizer"):
        parse_config({"compress": {"quantize": "qat", "engine": "xnnpack"}})


@pytest.mark.skipif(importlib.util.find_spec("nni") is None, reason="NNI is an optional extra: pip install 'autodistill[nni]'")
@pytest.mark.parametrize("importance", ["l1", "fpgm", "taylor"])
def test_nni_chooses_and_torch_pruning_removes(data, importance):
    cfg, spec, model, compression = _setup(data, "resnet", epochs=2, prune_rate=0.5, prune_at=0.5, importance=importance, prune_backend="nni")
    train(model, data, cfg.train, seed=0, compression=compression)
    assert count_params(compression.model) < 0.6 * count_params(build_student(spec))
    x = data.normalize(data.x_val)
    compression.model.eval()
    assert torch.equal(_rebuilt(compression)(x), compression.model(x))


# --- in a study ------------------------------------------------------------------------------
@pytest.mark.integration
def test_study_with_compression_records_real_costs_and_exports_int8(tmp_path):
    """A study whose space holds pruning and PTQ: the params, size and accuracy of every float
    trial and of one int8 trial are those of its saved network; that int8 one exports to all
    three formats."""
    path = small_study(
        tmp_path,
        "squeeze",
        **{
            "student.family": "cnn",
            "compress.prune_rate": {"choice": [0.0, 0.5]},
            "compress.quantize": {"choice": ["none", "ptq"]},
            "compress.prune_at": 0.3,
            "compress.engine": "xnnpack",  # for a phone: the export adds an ExecuTorch program
            "compress.reduce_range": True,  # ONNX Runtime on an x86 CPU without VNNI saturates 8-bit weights, and the export checks it here
            "search.trials": 6,
            "search.sampler": "random",
            "objectives": {"accuracy": "max", "params": "min", "size_mb": "min"},
        },
    )
    run = run_cli("search", path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = tmp_path / "results" / "squeeze"
    trials = pd.read_csv(results / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    assert len(done) == 6
    data = load_dataset(parse_config({}).data)
    int8 = done[done["param.compress.quantize"] == "ptq"].iloc[0]
    for _, row in done.iterrows():
        quantized = row["param.compress.quantize"] == "ptq"
        trial_dir = results / "trials" / f"{int(row['number']):04d}"
        spec = json.loads((trial_dir / "spec.json").read_text())["spec"]
        assert ("layers" in spec.get("compress", {})) == (row["param.compress.prune_rate"] > 0)
        if quantized and row["number"] != int8["number"]:  # an int8 network is captured by torch.export: seconds each, so one is rebuilt
            assert pd.notna(row["accuracy_float"]) and spec["compress"]["quantize"]["method"] == "ptq"
            continue
        network = build_network(spec)
        network.load_state_dict(torch.load(trial_dir / "student.pt", weights_only=True))
        assert evaluate(network, data, "val") == pytest.approx(row["accuracy"], abs=1e-9)  # the saved network's (int8 or pruned)
        assert is_quantized(network) == quantized
        assert row["size_mb"] == pytest.approx(state_dict_mb(network), rel=1e-6)
        if not quantized:
            assert row["params"] == count_params(network)
        else:
            assert pd.notna(row["accuracy_float"])
    by_params = done.groupby("param.compress.prune_rate")["params"].max()
    assert by_params[0.5] < 0.6 * by_params[0.0]
    out = tmp_path / "export"
    run = run_cli("export", results, "--pick", int(int8["number"]), "--out", out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    card = json.loads((out / "model.json").read_text())
    assert card["architecture"]["compress"]["quantize"] == {"method": "ptq", "engine": "xnnpack", "flow": "pt2e", "reduce_range": True}
    assert set(card["files"]) == {"pt", "torchscript", "onnx", "executorch"} and (out / "student.pte").stat().st_size > 0
    checks = card["verification"]
    assert checks["pt"]["max_abs_diff"] <= 1e-4 and checks["torchscript"]["max_abs_diff"] <= 1e-4
    # ONNX Runtime and XNNPACK run their own int8 arithmetic: checked statistically, in quantization steps
    for fmt in ("onnx", "executorch"):
        check = checks[fmt]
        assert check["mean_abs_diff_steps"] <= 1.0 and check["top1_agreement"] >= 0.97 and 0 < check["output_step"] < 0.5, fmt
    assert "int8 kernels of ExecuTorch (XNNPACK)" in run.stdout and "int8 kernels of ONNX Runtime" in run.stdout
