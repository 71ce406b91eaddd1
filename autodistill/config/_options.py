"""Every option list of the study file, defined once. Each list is tested against the table of
the code that acts on it (``tests/test_options.py``), so a name cannot be accepted here and
unknown there."""

TASKS = ("image_classification", "language_modeling")
"""kinds of work (``task:``); each is a :class:`autodistill.tasks.Task`"""

TASK_METRICS = {
    "image_classification": ("accuracy", "params", "macs", "size_mb", "latency_ms"),
    "language_modeling": ("perplexity", "token_accuracy", "params", "params_non_embedding", "size_mb", "prefill_ms", "decode_ms_per_token"),
}
"""the metrics each task reports, each usable as an objective or a constraint"""

TASK_QUALITY = {"image_classification": ("accuracy", "max"), "language_modeling": ("perplexity", "min")}
"""the quality metric of each task and its direction: reported every epoch (its per-epoch
curve is stored on each trial as ``<metric>_curve``), ranked by early stopping at a rung"""

METRICS = TASK_METRICS["image_classification"]
"""Metric names of image classification: validation accuracy (0-1), parameters,
multiply-accumulates per image, state-dict size in MB, and latency in ms per batch of
``latency.batch_size``."""

COST_METRICS = ("params", "macs", "size_mb", "latency_ms", "params_non_embedding", "prefill_ms", "decode_ms_per_token")
"""metrics known before training (a constraint on them is checked before a trial trains)"""

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder")
DATA_STORAGE = ("auto", "memory", "stream")
OPTIMIZERS = ("adamw", "sgd")
TEMPERATURE_SCHEDULES = ("constant", "linear", "cosine", "step", "sigmoid", "adaptive")
WEIGHT_SCHEDULES = ("linear", "cosine", "sigmoid")
FEATURE_DISTANCES = ("mse", "cosine")
ATTENTION_TYPES = ("spatial", "cam", "matrix")
SAMPLE_WEIGHTING = ("none", "confidence", "entropy")
BALANCE = ("none", "gradnorm")
AUGMENT_TEACHER = ("views", "live")
PRUNE_IMPORTANCES = ("l1", "l2", "fpgm", "taylor", "bn_scale", "random")
PRUNE_BACKENDS = ("torch_pruning", "nni")
NNI_IMPORTANCES = ("l1", "l2", "fpgm", "taylor")
QUANTIZE = ("none", "ptq", "qat")
QUANT_ENGINES = ("auto", "x86", "onnxruntime", "xnnpack")
ENGINE_FOR_BACKEND = {"onnxruntime": "onnxruntime", "executorch": "xnnpack"}  # engine: auto; any other backend: x86
SAMPLERS = ("tpe", "nsga2", "gp", "random")
SINGLE_OBJECTIVE_PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "wilcoxon")
"""Optuna's pruners: they need a single objective (Optuna refuses reports in multi-objective studies)"""
PRUNERS = ("none", "pareto", "asha", *SINGLE_OBJECTIVE_PRUNERS)
LATENCY_DEVICES = ("cpu", "cuda")
LATENCY_BACKENDS = ("torch", "torch_compile", "torchscript", "onnxruntime", "executorch")

# language_modeling
LM_FAMILIES = ("qwen2", "llama")
"""transformers architectures a language-model teacher and its students can be"""
LM_INITS = ("random", "teacher_layers", "pruned_teacher")
"""how a student starts: random; the teacher's every k-th layer (DistilBERT); the teacher pruned in width by activation importance (Minitron)"""
KD_LOSSES = ("forward_kl", "reverse_kl", "jsd")
LM_HIDDEN_DISTANCES = ("mse", "cosine")
LM_ATTENTION_LOSSES = ("kl", "frobenius")
TOKEN_WEIGHTING = ("none", "entropy")
TOKENIZERS = ("byte", "bpe")
PRECISIONS = ("fp32", "bf16")
