"""Fill the model card template with the released checkpoint's hash and measured tables.

    python scripts/write_model_card.py TEMPLATE.md EVAL_B EVAL_A ABL_A ABL_B > model/MODEL_CARD.md

EVAL_B / EVAL_A are ``geomogeo evaluate`` output folders of the shipped model; ABL_A / ABL_B
are markdown files written by ``scripts/ablation_table.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    tpl, ev_b, ev_a, abl_a, abl_b = (Path(a) for a in sys.argv[1:6])
    index = json.loads((ROOT / "model" / "checkpoints.json").read_text())
    name = index["default"]
    meta = index["files"][name]
    mb = json.loads((ev_b / "metrics.json").read_text())["metrics"]
    g = mb["2<=N<=6"]
    fills = {
        "__SHA__": meta["sha256"],
        "__SIZE__": f"{meta['bytes'] / 1e6:.1f}",
        "__TABLE_B__": (ev_b / "metrics.md").read_text().split("\n", 2)[2].strip(),
        "__TABLE_A__": (ev_a / "metrics.md").read_text().split("\n", 2)[2].strip(),
        "__ABL_A__": abl_a.read_text().strip(),
        "__ABL_B__": abl_b.read_text().strip(),
        "__GOAL_ACC__": f"{g['acc@0.5']:.3f}",
        "__GOAL_ACCI__": f"{g['accI@0.5']:.3f}",
        "__CELL__": f"{mb['all']['centre_cell']:.0%}",
        "__ACC25__": f"{mb['all']['acc@0.25']:.3f}",
        "__ACC50__": f"{mb['all']['acc@0.5']:.3f}",
        "__MEDERR__": f"{mb['all']['centre_error_m_median']:.1f}",
    }
    text = tpl.read_text()
    for k, v in fills.items():
        text = text.replace(k, v)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
