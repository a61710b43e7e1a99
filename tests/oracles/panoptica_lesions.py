"""Lesion matching by panoptica (BrainLesion/panoptica), the oracle of the lesion metrics.

Usage: python panoptica_lesions.py cases.npz THRESHOLD MANY_TO_ONE
`cases.npz` holds pred_<i> and truth_<i> boolean tumour masks. Per case, panoptica labels both
with its connected components (cc3d, 26-connected in 3-D), matches them with
`NaiveThresholdMatching` on IoU (strictly above THRESHOLD; MANY_TO_ONE 1 lets several predicted
components join one reference lesion) and reports TP, FP, FN, instance counts and every
reference lesion's voxel count, match flag and Dice. Prints one JSON list (the last line of
stdout). Runs in the panoptica side environment only (never imports tumorsweep).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import panoptica
from panoptica import (
    ConnectedComponentsInstanceApproximator,
    InputType,
    Metric,
    NaiveThresholdMatching,
    Panoptica_Evaluator,
)


def main() -> None:
    panoptica.disable_citation_reminder()  # it prints a banner to stdout
    data = np.load(sys.argv[1])
    threshold, many = float(sys.argv[2]), sys.argv[3] == "1"
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=NaiveThresholdMatching(
            matching_metric=Metric.IOU,
            matching_threshold=threshold,
            allow_many_to_one=many,
            strict_threshold=True,
        ),
        instance_metrics=[Metric.DSC, Metric.IOU],
        global_metrics=[Metric.DSC],
    )
    out = []
    index = 0
    while f"pred_{index}" in data:
        pred = data[f"pred_{index}"].astype(np.uint8)
        truth = data[f"truth_{index}"].astype(np.uint8)
        result = evaluator.evaluate(pred, truth, verbose=False)["ungrouped"]
        full = result.to_dict(output_individual_instance_metrics=True)
        lesions = [
            {
                "voxels": int(ref["voxel_count"]),
                "detected": bool(ref["is_matched"]),
                "dice": float(ref.get("sq_dsc", 0.0)) if ref["is_matched"] else 0.0,
            }
            for ref in full.get("reference_instances", [])
        ]
        out.append(
            {
                "n_ref": int(result.n_ref_instances),
                "n_pred": int(result.n_pred_instances),
                "tp": int(result.tp),
                "fp": int(result.fp),
                "fn": int(result.fn),
                "lesions": lesions,
            }
        )
        index += 1
    print(json.dumps(out))


if __name__ == "__main__":
    main()
