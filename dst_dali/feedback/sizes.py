"""COCO's object sizes, by the area of a box in network-input pixels: small < 32², medium < 96²,
large otherwise. Apart from the loss split (signals, which needs torch), so that the record,
its readers and the commands over finished runs start without torch."""
SMALL_AREA, MEDIUM_AREA = 32 ** 2, 96 ** 2
GROUPS = ("small", "medium", "large")
