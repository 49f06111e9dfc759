"""Fill the model card template with a released checkpoint's hash and measured tables.

    python scripts/write_model_card.py scripts/model_card_template.md \\
        --eval-b runs/final/evalB_rot4s2 --eval-b-none runs/final/evalB_none \\
        --eval-a runs/final/evalA_rot4s2 --tta-val tta_val.md --tta-test tta_test.md \\
        --abl-a abl_a.md --abl-b abl_b.md --abl-a-tta abl_a_tta.md --abl-b-tta abl_b_tta.md \
        > model/MODEL_CARD.md

``--name`` is the checkpoint the tables measure (``mogeo-light-v2.pt``, the default until
``mogeo-light16-v3.pt``; the later sections of the card are written out in the template).
``--eval-*`` are ``geomogeo evaluate`` output folders of that model (test set B with
the default inference and with one pass, its second render, test set A); the ``.md`` files
are tables written by ``scripts/metrics_table.py``. The demo line is measured by running the
demo with that model.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geomogeo.demo import run_demo  # noqa: E402
from geomogeo.predictor import parse_tta  # noqa: E402


def _table(folder: Path) -> str:
    """The metrics table of an evaluate folder, without its title line."""
    return (folder / "metrics.md").read_text().split("\n", 2)[2].strip()


def _demo_line(model: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_demo(tmp, model_path=model, quiet=True, echo=lambda _: None)
    good = sum(r.iou > 0.5 for r in rows)
    best = max(r.iou for r in rows)
    return f"{good}/{len(rows)} targets with IoU > 0.5 (the best at {best:.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("template", type=Path)
    p.add_argument("--name", default="mogeo-light-v2.pt",
                   help="the checkpoint in model/ whose measurements the template's tables hold")
    for name in ("eval-b", "eval-b-none", "eval-b2", "eval-a", "tta-val", "tta-test", "abl-a",
                 "abl-b", "abl-a-tta", "abl-b-tta"):
        p.add_argument(f"--{name}", type=Path, required=True)
    args = p.parse_args()
    index = json.loads((ROOT / "model" / "checkpoints.json").read_text())
    name = args.name
    meta = index["files"][name]
    result_b = json.loads((args.eval_b / "metrics.json").read_text())
    mb = result_b["metrics"]
    mn, m2, ma = (json.loads((f / "metrics.json").read_text())["metrics"]
                  for f in (args.eval_b_none, args.eval_b2, args.eval_a))
    spec = parse_tta(result_b["tta"])
    fills = {
        "__FILE__": name,
        "__SHA__": meta["sha256"],
        "__SIZE__": f"{meta['bytes'] / 1e6:.1f}",
        "__TTA__": str(spec),
        "__TTA_PASSES__": str(spec.passes),
        "__TABLE_B__": _table(args.eval_b),
        "__TABLE_B_NONE__": _table(args.eval_b_none),
        "__TABLE_A__": _table(args.eval_a),
        "__TABLE_B2__": _table(args.eval_b2),
        "__TTA_VAL__": args.tta_val.read_text().strip(),
        "__TTA_TEST__": args.tta_test.read_text().strip(),
        "__ABL_A__": args.abl_a.read_text().strip(),
        "__ABL_B__": args.abl_b.read_text().strip(),
        "__ABL_A_TTA__": args.abl_a_tta.read_text().strip(),
        "__ABL_B_TTA__": args.abl_b_tta.read_text().strip(),
        "__GOAL_ACC_NONE__": f"{mn['2<=N<=6']['acc@0.5']:.3f}",
        "__GOAL_ACCI_NONE__": f"{mn['2<=N<=6']['accI@0.5']:.3f}",
        "__GOAL_ACC__": f"{mb['2<=N<=6']['acc@0.5']:.3f}",
        "__GOAL_ACCI__": f"{mb['2<=N<=6']['accI@0.5']:.3f}",
        "__GOAL_ACC_B2__": f"{m2['2<=N<=6']['acc@0.5']:.3f}",
        "__GOAL_ACCI_B2__": f"{m2['2<=N<=6']['accI@0.5']:.3f}",
        "__GOAL_ACC_A__": f"{ma['2<=N<=6']['acc@0.5']:.3f}",
        "__GOAL_ACCI_A__": f"{ma['2<=N<=6']['accI@0.5']:.3f}",
        "__ACC25_NONE__": f"{mn['all']['acc@0.25']:.3f}",
        "__ACC50_NONE__": f"{mn['all']['acc@0.5']:.3f}",
        "__ACC25__": f"{mb['all']['acc@0.25']:.3f}",
        "__ACC50__": f"{mb['all']['acc@0.5']:.3f}",
        "__MEDERR__": f"{mb['all']['centre_error_m_median']:.1f}",
        "__MEANERR__": f"{mb['all']['centre_error_m_mean']:.1f}",
        "__DEMO__": _demo_line(ROOT / "model" / name),
    }
    text = args.template.read_text()
    for k, v in fills.items():
        text = text.replace(k, v)
    left = sorted(set(re.findall(r"__[A-Z][A-Z0-9_]*__", text)))
    if left:
        raise SystemExit(f"unfilled placeholders: {left}")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
