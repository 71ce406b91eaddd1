"""The study file: pydantic models of every YAML section.

One module per concern: :mod:`._options` (every option list, once), :mod:`._base` (what
sections share), one module per group of sections, :mod:`._rules` (rules across sections, one
named function each), :mod:`._study` (the whole file) and :mod:`._errors` (one-line errors).
Reading a file is :mod:`autodistill.loading`, above this package and the search space.

Validation happens once, in the driver, before Ray starts. Unknown keys are errors
everywhere. ``yaml.safe_load`` only: a config never runs code.
"""

from ._base import Section, choices, has_distribution, may_be_on
from ._compress import CompressConfig, compress_may_be_active
from ._data import DataConfig
from ._errors import STUDY_FILES, format_loc, parse_config, set_overrides
from ._networks import StudentConfig, TeacherConfig, TeacherTrainConfig, TrainConfig
from ._options import COST_METRICS, KD_LOSSES, LM_FAMILIES, LM_INITS, METRICS, TASK_METRICS, TASK_QUALITY, TASKS
from ._recipe import AugmentConfig, DistillConfig, TemperatureConfig, parse_stages
from ._run import Bound, EarlyStoppingConfig, ExecutionConfig, LatencyConfig, SearchConfig, SearchResources
from ._study import StudyBase, StudyConfig
from ._text import EMBEDDED_CORPUS, CorpusConfig, LMArch, TextDistillConfig, TextStudentConfig, TextStudyConfig, TextTrainConfig, check_heads

__all__ = [
    "EMBEDDED_CORPUS",
    "STUDY_FILES",
    "CorpusConfig",
    "LMArch",
    "StudyBase",
    "TextDistillConfig",
    "TextStudentConfig",
    "TextStudyConfig",
    "TextTrainConfig",
    "check_heads",
    "COST_METRICS",
    "KD_LOSSES",
    "LM_FAMILIES",
    "LM_INITS",
    "METRICS",
    "TASKS",
    "TASK_METRICS",
    "TASK_QUALITY",
    "AugmentConfig",
    "Bound",
    "CompressConfig",
    "DataConfig",
    "DistillConfig",
    "EarlyStoppingConfig",
    "ExecutionConfig",
    "LatencyConfig",
    "SearchConfig",
    "SearchResources",
    "Section",
    "StudentConfig",
    "StudyConfig",
    "TeacherConfig",
    "TeacherTrainConfig",
    "TemperatureConfig",
    "TrainConfig",
    "choices",
    "compress_may_be_active",
    "format_loc",
    "has_distribution",
    "may_be_on",
    "parse_config",
    "parse_stages",
    "set_overrides",
]
