"""An independent brute-force VOC AP: py-faster-rcnn's ``voc_eval.py`` loop on VOC 1-based boxes
with the devkit's ``+1`` IoU formula, for tests to compare the package's scores against."""

from __future__ import annotations

import numpy as np

# 11-point thresholds by hand: MATLAB's 0:0.1:1 (the devkit) and numpy.arange(0, 1.1, 0.1).
ELEVEN_POINTS = {
    "voc07": [0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "voc07_numpy": [0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6000000000000001]
    + [0.7000000000000001, 0.8, 0.9, 1.0],
}


def brute_voc_eval(gt_by_image, dets_in_order, npos_class, metric):
    """gt_by_image: {image: [(voc_box, difficult)]} of one class; dets_in_order: [(image, score,
    voc_box)] of that class in input order. VOC boxes 1-based inclusive, devkit +1 IoU formula.
    ``metric``: a key of ELEVEN_POINTS (11-point AP) or "voc10"."""
    order = sorted(range(len(dets_in_order)), key=lambda i: -dets_in_order[i][1])  # stable
    taken = {image: [False] * len(objs) for image, objs in gt_by_image.items()}
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, index in enumerate(order):
        image, _, bb = dets_in_order[index]
        ovmax, jmax = -np.inf, -1
        for j, (bbgt, _) in enumerate(gt_by_image.get(image, [])):
            iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1.0
            ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1.0
            if iw > 0 and ih > 0:
                inter = iw * ih
                uni = (
                    (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                    + (bbgt[2] - bbgt[0] + 1.0) * (bbgt[3] - bbgt[1] + 1.0)
                    - inter
                )
                if inter / uni > ovmax:
                    ovmax, jmax = inter / uni, j
        if ovmax >= 0.5:
            if not gt_by_image[image][jmax][1]:
                if not taken[image][jmax]:
                    tp[d] = 1.0
                    taken[image][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos_class) if npos_class else None
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if rec is None:
        return float("nan"), prec, rec
    if metric in ELEVEN_POINTS:
        ap = 0.0
        for t in ELEVEN_POINTS[metric]:
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return float(ap), prec, rec
