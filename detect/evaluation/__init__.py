"""Scoring detections: VOC AP (:mod:`.voc_ap`), comp4 files (:mod:`.voc_files`), COCO (:mod:`.coco`)."""
