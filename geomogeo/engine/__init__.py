"""Training and evaluation: typed configs, the training loop, metrics, checkpoints.

Entry points: :func:`geomogeo.engine.train.train_from_file` (``geomogeo train CONFIG``) and
:func:`geomogeo.engine.evaluate.evaluate` (``geomogeo evaluate``). Submodules are imported on
use so that ``import geomogeo`` stays light.
"""
