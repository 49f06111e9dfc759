"""Data: the multi-object manifest, the CVOGL reader, in-memory packed datasets, joint
augmentations, k-means anchors, and the cross-view data engine (:mod:`geomogeo.data.synth`)."""
