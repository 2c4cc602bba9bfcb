"""Training from the notebook: the config side (presets, TOML) and the run side (start, follow, stop).

Run side: ``start_run`` launches the trainer as a subprocess and returns a ``RunHandle``;
``find_active_runs`` finds runs still going after a kernel restart; ``RunMonitor`` (process +
``EventFollower`` + ``RunProgress``) is what the monitor panel polls.

Config side: ``TrainingForm`` -> ``plan_config`` (checked values, exact TOML text) -> ``save_config`` /
``write_run_config``; ``live_checks`` (steps with the formula, findings with fixes); presets,
imports (sd-scripts TOML, kohya_ss JSON), the beginner's network types and the base models found on disk.
"""
from core.training.follow_events import EventFollower
from core.training.run_monitor import RunMonitor
from core.training.run_process import RunHandle, find_active_runs, start_run
from core.training.run_progress import LossPoint, RunMessage, RunProgress, SampleSet
from core.training.run_text import format_duration, format_rate

# Config side (no torch, no ipywidgets).
from core.training.base_models import BaseModel, describe_model, find_base_models
from core.training.checks import ERROR, INFO, WARNING, CheckReport, Finding, ModelFacts, live_checks
from core.training.config_reader import ReadResult, import_sd_scripts_toml, read_training_toml
from core.training.form import ConfigPlan, TrainingForm, check_value, plan_config, repeat_folders, write_plan
from core.training.kohya_json import import_kohya_json
from core.training.network_types import NETWORK_TYPES, NetworkChoice, NetworkType, detect_network_type
from core.training.presets import TrainingPreset, load_training_presets, suggest_preset
from core.training.steps import FolderCount, StepEstimate, count_images, estimate_steps
from core.training.store import SavedConfig, list_configs, list_projects, load_config, save_config, write_run_config

__all__ = [
    "EventFollower",
    "LossPoint",
    "RunHandle",
    "RunMessage",
    "RunMonitor",
    "RunProgress",
    "SampleSet",
    "find_active_runs",
    "format_duration",
    "format_rate",
    "start_run",
    # config side
    "BaseModel", "CheckReport", "ConfigPlan", "ERROR", "Finding", "FolderCount", "INFO", "ModelFacts", "ReadResult",
    "NETWORK_TYPES", "NetworkChoice", "NetworkType", "detect_network_type",
    "SavedConfig", "StepEstimate", "TrainingForm", "TrainingPreset", "WARNING", "check_value", "count_images",
    "describe_model", "estimate_steps", "find_base_models", "import_kohya_json", "import_sd_scripts_toml",
    "list_configs", "list_projects", "live_checks", "load_config", "load_training_presets", "plan_config",
    "read_training_toml", "repeat_folders", "save_config", "suggest_preset", "write_plan", "write_run_config",
]
