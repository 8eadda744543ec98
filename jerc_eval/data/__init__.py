"""Package data: ``imagenet_c.json`` (ImageNet-C corruption names, families and the AlexNet CE/mCE normalizer).

Read it with :func:`jerc_eval.metrics.imagenet_c_table`, which loads it through :mod:`importlib.resources`.
"""
