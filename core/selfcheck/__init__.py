""""Check my setup": prove on this machine, offline and in about a minute, that the whole chain works.

It builds a tiny model and a few sample images, tags them with a tiny WD14 tagger, trains a tiny
LoRA through the real trainer subprocess and checks the file, before the user downloads a
multi-GB base model. ``python -m core.selfcheck`` runs it from the command line.
"""
from core.selfcheck.report import FAILED, OK, PENDING, RUNNING, SKIPPED, STAGES, SelfCheckReport, StageResult
from core.selfcheck.runner import DEFAULT_STEPS, run_self_check, scratch_folder

__all__ = ["DEFAULT_STEPS", "FAILED", "OK", "PENDING", "RUNNING", "SKIPPED", "STAGES", "SelfCheckReport",
           "StageResult", "run_self_check", "scratch_folder"]
