"""Re-save training checkpoints (``last.pt``: fp32 weights, optimiser, progress) as fp16
weights only, with their configuration and metrics, the form ``best.pt`` and the released
models have (about 8.7 MB for the light configurations instead of about 50)::

    python scripts/slim_checkpoint.py runs/abl/full/last.pt out/full.pt [SRC DST ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from geomogeo.engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def main(argv: list[str]) -> None:
    if not argv or len(argv) % 2:
        raise SystemExit(__doc__)
    for src, dst in zip(argv[0::2], argv[1::2], strict=True):
        ck = load_checkpoint(Path(src), map_location="cpu")
        sha = save_checkpoint(Path(dst), ck.model, train_config=ck.train_config,
                              metrics=ck.metrics, dtype=torch.float16)
        print(f"{src} -> {dst} (sha256 {sha})")


if __name__ == "__main__":
    main(sys.argv[1:])
