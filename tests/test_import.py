"""`import icfrr_fast` registers the ops and does nothing else (docs/design.md §3)."""

import subprocess
import sys

import torch

import icfrr_fast


def test_import_is_lean():
    code = (
        "import sys, torch\n"
        "import icfrr_fast\n"
        "heavy = [m for m in ('triton', 'timm', 'faiss', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert not torch.cuda.is_initialized()\n"
        "assert hasattr(torch.ops.icfrr_fast, 'icfrr_rerank') and hasattr(torch.ops.icfrr_fast, 'dense_topk')\n"
        "assert 'icfrr_fast._C' not in sys.modules  # the native module loads on first use\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_public_names():
    for name in ("icfrr", "ICFRRResult", "GalleryGraph", "metrics", "reference", "set_num_threads"):
        assert hasattr(icfrr_fast, name), name
    assert torch.ops.icfrr_fast.icfrr_rerank.default is not None
