"""Scoring detections, for ``detect eval`` and ``detect score``.

* :mod:`.evaluators`: VOC and COCO evaluators (``reset`` / ``process`` / ``evaluate``), the metric
  names and the score table;
* :mod:`.voc_ap`: VOC AP exactly as the devkit computes it; :mod:`.coco`: the ``COCOeval`` bridge;
* one reader and one writer per detections format: :mod:`.detections_json` (the project's),
  :mod:`.voc_files` (comp4), :mod:`.coco_results` (COCO results); :mod:`.detection_files` tells
  them apart when reading what a user gives;
* :mod:`.checkpoint_eval`: a checkpoint over a split, with its result files (``detect eval``).
"""
