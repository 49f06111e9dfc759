"""Print the ablation table (markdown) from ``geomogeo evaluate`` outputs.

    python scripts/ablation_table.py runs/gpu/eval_{full,no_mope,no_cvmf,no_ls,detgeo}

Each argument is an evaluate output folder (``metrics.json``); the row name is the folder
name after its last underscore-free prefix (``eval_full`` -> ``full``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {"full": "MOGeo (MOPE + CVMF + L_s)", "no_mope": "w/o MOPE (Gaussian click map)",
         "no_cvmf": "w/o CVMF (A_k * V_r only)", "no_ls": "w/o L_s",
         "detgeo": "DetGeo-style (input click map, one pass per click)"}


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def main() -> None:
    print("| model | acc@0.25 | acc@0.5 | accI@0.25 | accI@0.5 | mean IoU | centre err. m "
          "(median) | acc@0.25 N<=3 | acc@0.25 3<N<=6 | acc@0.25 N>6 | accI@0.5 2<=N<=6 |")
    print("|---" * 11 + "|")
    for folder in sys.argv[1:]:
        d = json.loads((Path(folder) / "metrics.json").read_text())["metrics"]
        key = Path(folder).name.split("_", 1)[1]
        a = d["all"]
        row = [NAMES.get(key, key), *(fmt(a[k]) for k in (
            "acc@0.25", "acc@0.5", "accI@0.25", "accI@0.5", "mean_iou")),
            "–" if a["centre_error_m_median"] is None else f"{a['centre_error_m_median']:.1f}",
            fmt(d["N<=3"]["acc@0.25"]), fmt(d["3<N<=6"]["acc@0.25"]), fmt(d["N>6"]["acc@0.25"]),
            fmt(d["2<=N<=6"]["accI@0.5"])]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
