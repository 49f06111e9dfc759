"""Print a markdown table comparing ``geomogeo evaluate`` outputs, one row per folder.

    python scripts/metrics_table.py --by variant runs/gpu/eval_{full,no_mope,no_cvmf,no_ls,detgeo}
    python scripts/metrics_table.py --by tta runs/final/evalV_*

Each argument is an evaluate output folder (``metrics.json``). ``--by variant`` (the ablation
table) names a row after the variant its folder name ends with (``eval_full``, ``ablA_no_ls``);
``--by tta`` names it after the test-time augmentation recorded in the file, with
its number of network passes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geomogeo.predictor import parse_tta  # noqa: E402

NAMES = {"full": "MOGeo (MOPE + CVMF + L_s)", "no_mope": "w/o MOPE (Gaussian click map)",
         "no_cvmf": "w/o CVMF (A_k * V_r only)", "no_ls": "w/o L_s",
         "detgeo": "DetGeo-style (input click map, one pass per click)"}

#: (header, group, metric) of the columns after the row name.
COLUMNS = {
    "variant": [("acc@0.25", "all", "acc@0.25"), ("acc@0.5", "all", "acc@0.5"),
                ("accI@0.25", "all", "accI@0.25"), ("accI@0.5", "all", "accI@0.5"),
                ("mean IoU", "all", "mean_iou"),
                ("centre err. m (median)", "all", "centre_error_m_median"),
                ("acc@0.25 N<=3", "N<=3", "acc@0.25"), ("acc@0.25 3<N<=6", "3<N<=6", "acc@0.25"),
                ("acc@0.25 N>6", "N>6", "acc@0.25"), ("accI@0.5 2<=N<=6", "2<=N<=6", "accI@0.5")],
    "tta": [("acc@0.25", "all", "acc@0.25"), ("acc@0.5", "all", "acc@0.5"),
            ("accI@0.5", "all", "accI@0.5"), ("mean IoU", "all", "mean_iou"),
            ("centre err. m (median)", "all", "centre_error_m_median"),
            ("acc@0.5 2<=N<=6", "2<=N<=6", "acc@0.5"), ("accI@0.5 2<=N<=6", "2<=N<=6", "accI@0.5")],
}


def fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if metric.startswith("centre_error") else f"{v:.3f}"


def row_name(folder: Path, result: dict, by: str) -> str:
    if by == "tta":
        spec = parse_tta(result.get("tta", "none"))
        return f"{spec} ({spec.passes} pass{'es' if spec.passes > 1 else ''})"
    return next((name for key, name in NAMES.items() if folder.name.endswith(key)), folder.name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--by", choices=sorted(COLUMNS), default="variant")
    p.add_argument("folders", nargs="+", type=Path)
    args = p.parse_args()
    cols = COLUMNS[args.by]
    first = "model" if args.by == "variant" else "test-time augmentation"
    print("| " + " | ".join([first, *(c[0] for c in cols)]) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for folder in args.folders:
        result = json.loads((folder / "metrics.json").read_text())
        d = result["metrics"]
        cells = [row_name(folder, result, args.by), *(fmt(d[g][m], m) for _, g, m in cols)]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
