"""Runs INSIDE the target interpreter (``python -c <this file's text> <json args>``); never imported.

It prints one line, ``@@installer-probe@@`` followed by a JSON report: the interpreter, the installed
torch and onnxruntime (imported only when asked, since a broken CUDA library can kill the process),
the requirement lines it does not satisfy, and the registered Jupyter kernel's interpreter. The target
may be any Python with any packages, so this uses the standard library, plus packaging when present.
"""
import importlib.metadata as md
import json
import re
import sys

args = json.loads(sys.argv[1])


def have(name: str) -> "str | None":
    """Installed version of a distribution, or None."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


out = {"python": sys.executable, "version": ".".join(map(str, sys.version_info[:3])), "torch_dist": have("torch")}
flavours = sorted({(d.metadata["Name"] or "").lower(): d.version for d in md.distributions()
                   if (d.metadata["Name"] or "").lower().startswith("onnxruntime")}.items())
out["onnxruntime"] = " ".join(flavours[0]) if flavours else None
if args.get("import") and out["torch_dist"]:
    try:
        import torch
        out["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                        "hip": getattr(torch.version, "hip", None)}
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            out["torch_gpu"] = [props.name, props.total_memory // 2**20]
    except Exception as exc:
        out["torch"] = {"version": out["torch_dist"], "error": f"{type(exc).__name__}: {exc}"[:300]}
if args.get("import") and out["onnxruntime"]:
    try:
        import onnxruntime
        out["providers"] = onnxruntime.get_available_providers()
    except Exception as exc:
        out["providers"] = [f"(import failed: {type(exc).__name__}: {exc})"[:300]]
try:
    from packaging.requirements import Requirement
except ImportError:
    try:
        from pip._vendor.packaging.requirements import Requirement
    except ImportError:
        Requirement = None
unmet = []
for line in args.get("requirements", []):
    if Requirement is None:
        # Without packaging only the name can be checked; "exact": false tells the caller so.
        if have(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]) is None:
            unmet.append(line)
        continue
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate():
        continue
    found = have(req.name)
    if found is None or not req.specifier.contains(found, prereleases=True):
        unmet.append(line)
out["unmet"] = unmet
try:
    from jupyter_core.paths import jupyter_data_dir
    with open(f"{jupyter_data_dir()}/kernels/{args['kernel']}/kernel.json", encoding="utf-8") as spec:
        out["kernel_python"] = json.load(spec)["argv"][0]
except Exception:
    out["kernel_python"] = None
out["exact"] = Requirement is not None
print("@@installer-probe@@" + json.dumps(out))
