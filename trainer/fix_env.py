"""Post-install fixes for .venv-trainer, run by `make trainer-env` with that venv's python (standard library only).

PyPI's torchvision and torchaudio wheels are CUDA-linked and do not load beside the CPU torch ("operator
torchvision::nms does not exist", then transformers cannot import PreTrainedModel). transformers treats
torchvision as optional, so it is uninstalled; LLaMA-Factory imports torchaudio unconditionally, so only its
compiled libraries are removed and it imports as plain Python. Text training is unaffected.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import sysconfig
from pathlib import Path


def uninstall_torchvision() -> bool:
    """Uninstall torchvision from this interpreter's environment; False when it was not there."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    command = [sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "torchvision"]
    subprocess.run(command, check=True)  # noqa: S603 - fixed argv, this interpreter's own pip
    return True


def strip_torchaudio() -> list[Path]:
    """Delete the compiled libraries under site-packages/torchaudio/lib; returns what was removed."""
    lib = Path(sysconfig.get_paths()["purelib"]) / "torchaudio" / "lib"
    removed = sorted(lib.glob("*.so*")) if lib.is_dir() else []
    for library in removed:
        library.unlink()
    return removed


def main() -> None:
    """Apply both fixes and say what was done."""
    uninstalled = uninstall_torchvision()
    removed = strip_torchaudio()
    done = "uninstalled" if uninstalled else "absent"
    print(f"fix_env: torchvision {done}; {len(removed)} torchaudio libraries removed")


if __name__ == "__main__":
    main()
