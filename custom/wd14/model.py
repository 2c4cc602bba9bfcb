"""Where a WD14 model's files come from, and the onnxruntime session that runs it.

Files: ``model.onnx`` and ``selected_tags.csv`` from a SmilingWolf repo on the Hugging Face Hub,
downloaded once and then reused without asking the network again (sd-scripts' Jupyter edition
re-downloaded 1.3 GB on every run). Three places, in this order:

1. ``model_dir`` itself holds both files: used as they are, fully offline (no Hub call at all);
2. ``model_dir`` given but without the files: they are downloaded into ``model_dir/<owner>_<name>``
   (kohya's layout) and found there next time;
3. no ``model_dir``: the Hugging Face cache (``HF_HOME``, or ``HF_HUB_CACHE``), looked up locally first.

``force_download`` skips the local copies of 2 and 3 and fetches the files again. The endpoint is
``HF_ENDPOINT`` (mirrors) unless given; tokens are left to huggingface_hub and never printed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from custom.errors import CustomError

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
DEFAULT_REPO = "SmilingWolf/wd-eva02-large-tagger-v3"
# The SmilingWolf models (FORMATS.md section 3); any other repo with the same two files works too.
KNOWN_REPOS = (
    "SmilingWolf/wd-eva02-large-tagger-v3", "SmilingWolf/wd-vit-large-tagger-v3", "SmilingWolf/wd-vit-tagger-v3",
    "SmilingWolf/wd-swinv2-tagger-v3", "SmilingWolf/wd-convnext-tagger-v3", "SmilingWolf/wd-v1-4-moat-tagger-v2",
    "SmilingWolf/wd-v1-4-swinv2-tagger-v2", "SmilingWolf/wd-v1-4-convnext-tagger-v2",
    "SmilingWolf/wd-v1-4-convnextv2-tagger-v2", "SmilingWolf/wd-v1-4-vit-tagger-v2",
)
_DEFAULT_SIDE = 448  # only used when the model leaves its input side dynamic


@dataclass(frozen=True)
class ModelFiles:
    """The two files of a model and how they were found ("folder", "cache" or "downloaded")."""

    model: Path
    tags: Path
    source: str


def _complete(folder: Path) -> bool:
    return (folder / MODEL_FILE).is_file() and (folder / TAGS_FILE).is_file()


def _download(repo_id: str, local_dir: Path | None, force: bool, endpoint: str | None) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    paths = []
    for name in (MODEL_FILE, TAGS_FILE):
        try:
            found = hf_hub_download(repo_id, name, local_dir=local_dir, force_download=force, endpoint=endpoint)
        except (LocalEntryNotFoundError, OfflineModeIsEnabled) as problem:
            raise CustomError(
                f"Cannot download {name} of {repo_id}: no connection to the Hugging Face Hub (or offline mode is on).",
                hint="Connect to the internet, unset HF_HUB_OFFLINE, or pass --model_dir with a folder holding "
                     f"{MODEL_FILE} and {TAGS_FILE}.") from problem
        except HfHubHTTPError as problem:
            status = getattr(problem.response, "status_code", "?")
            raise CustomError(
                f"Cannot download {name} of {repo_id} (HTTP {status}).",
                hint=f"Check --repo_id (for example {DEFAULT_REPO}); gated or private repos need `hf auth login`.",
                option="--repo_id") from problem
        paths.append(Path(found))
    return paths[0], paths[1]


def _cached(repo_id: str) -> tuple[Path, Path] | None:
    """Both files from the Hugging Face cache without any network request, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(repo_id, name) for name in (MODEL_FILE, TAGS_FILE)]
    if all(isinstance(item, str) and Path(item).is_file() for item in found):
        return Path(found[0]), Path(found[1])
    return None


def resolve_model_files(repo_id: str = DEFAULT_REPO, model_dir: Path | str | None = None,
                        force_download: bool = False, endpoint: str | None = None) -> ModelFiles:
    """Find or download ``model.onnx`` and ``selected_tags.csv`` (see the module docstring for the order)."""
    if "/" not in repo_id.strip("/"):
        raise CustomError(f"--repo_id {repo_id!r} is not an owner/name repository id.",
                          hint=f"For example {DEFAULT_REPO}.", option="--repo_id")
    if model_dir is not None:
        folder = Path(model_dir).expanduser()
        if _complete(folder) and not force_download:
            return ModelFiles(folder / MODEL_FILE, folder / TAGS_FILE, "folder")
        target = folder / repo_id.replace("/", "_")
        if _complete(target) and not force_download:
            return ModelFiles(target / MODEL_FILE, target / TAGS_FILE, "folder")
        target.mkdir(parents=True, exist_ok=True)
        model, tags = _download(repo_id, target, force_download, endpoint)
        return ModelFiles(model, tags, "downloaded")
    if not force_download:
        cached = _cached(repo_id)
        if cached is not None:
            return ModelFiles(cached[0], cached[1], "cache")
    model, tags = _download(repo_id, None, force_download, endpoint)
    return ModelFiles(model, tags, "downloaded")


def choose_providers(available: list[str]) -> list[str]:
    """CUDA first when onnxruntime offers it (onnxruntime-gpu), then the CPU."""
    chosen = [name for name in ("CUDAExecutionProvider",) if name in available]
    return chosen + ["CPUExecutionProvider"]


@dataclass(frozen=True)
class TaggerModel:
    """A loaded model: its session and the facts read from it (never assumed)."""

    session: object  # onnxruntime.InferenceSession; typed loosely so importing this module stays light
    input_name: str
    output_name: str
    side: int  # square input side, 448 for the SmilingWolf models
    fixed_batch: int | None  # set when the model was exported with a fixed batch size
    n_outputs: int | None
    provider_line: str  # the one line that says where inference runs


def load_model(model_path: Path, threads: int | None = None) -> TaggerModel:
    """Open ``model_path`` with onnxruntime (CUDA when available, else CPU) and read its input/output layout."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Idle inference threads would otherwise spin and take CPU from the decoding workers.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # onnxruntime's warnings about unused initialisers are noise to users
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=choose_providers(available))
    except Exception as problem:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
        raise CustomError(f"onnxruntime cannot load {model_path}: {' '.join(str(problem).split())[:200]}",
                          hint="The file may be incomplete: run again with --force_download.") from problem
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3:
        raise CustomError(f"{model_path} takes input of shape {shape}; a WD14 tagger takes [batch, side, side, 3].",
                          hint="Use a SmilingWolf WD14 model (see --repo_id).", option="--repo_id")
    side = shape[1] if isinstance(shape[1], int) else _DEFAULT_SIDE
    fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    out_shape = list(outputs[0].shape)
    n_outputs = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
    used = session.get_providers()[0]
    if used == "CUDAExecutionProvider":
        line = f"onnxruntime {ort.__version__}: running on the GPU (CUDAExecutionProvider)"
    elif "CUDAExecutionProvider" in available:
        line = f"onnxruntime {ort.__version__}: CUDA is installed but did not start; running on the CPU"
    else:
        line = (f"onnxruntime {ort.__version__}: running on the CPU (CPUExecutionProvider; "
                "install onnxruntime-gpu for CUDA)")
    return TaggerModel(session, inputs[0].name, outputs[0].name, side, fixed_batch, n_outputs, line)
