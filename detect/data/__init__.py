"""Data set readers and writers (VOC, COCO, the built-in synthetic set) and image loading."""
