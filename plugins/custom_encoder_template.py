"""A one-file jerc-eval plugin: copy this file, rename the encoder, and put your model in ``build_model``.

Tutorial
========
1. Try it as is (it evaluates a small ResNet you trained yourself and saved with ``torch.save(model.state_dict())``)::

       jerc-eval --plugin plugins/custom_encoder_template.py list encoders        # shows "my-encoder"
       jerc-eval --plugin plugins/custom_encoder_template.py run -e my-encoder \\
           -o checkpoint my_resnet.pth -o paradigm JE -c noise -s 1,5

   ``JERC_EVAL_PLUGIN_FILES=plugins/custom_encoder_template.py`` does the same as ``--plugin`` for every command.

2. Change three things:
   - ``name``/``description``: what ``jerc-eval list encoders`` shows and what ``-e`` selects.
   - ``build_model``: return an ``nn.Module`` that maps normalised images ``(B, 3, S, S)`` to features ``(B, D)``.
     Remove the classifier (``model.fc = nn.Identity()``): the probe is fitted by jerc-eval.
   - ``preprocess``: the input size and normalisation your model was trained with.

3. Load weights strictly. ``read_checkpoint`` refuses pickles that need code (``weights_only=True``);
   ``find_state_dict`` finds the weights under ``model``/``state_dict``; ``split_keys`` keeps ``backbone.*`` and
   drops the heads you name (anything else is an error); ``strict_load`` reports missing/unexpected/mis-shaped
   keys in one line. Never fall back to random weights: ``random_init`` is the only place for those.

4. The core does the rest: batching, device, ``eval()``, no-grad, feature caching (keyed by the weights' sha256,
   ``version`` and ``feature_protocol``: bump ``version`` when you change what the features are), seeding.

5. When it works, package it (see docs/plugins.md): a ``pyproject.toml`` with
   ``[project.entry-points.jerc_eval] my_encoder = "my_encoder"`` and ``pip install -e .``; it then loads
   without ``--plugin`` (``JERC_EVAL_PLUGINS=my_encoder`` allow-lists it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from jerc_eval.api import EncoderAdapter, LoadedEncoder, Option, Preprocess
from jerc_eval.checkpoints import find_state_dict, read_checkpoint, sha256_file, split_keys, strict_load
from jerc_eval.hookspecs import hookimpl

__version__ = "0.1.0"  # shown by `jerc-eval plugins`


def build_model(width: int) -> Any:
    """Your architecture, without its classifier. Here: a small torchvision-layout ResNet from jerc-eval."""
    from jerc_eval.models import ResNet

    return ResNet(layers=(1, 1, 1, 1), widths=(width, width, 2 * width, 2 * width))  # forward -> (B, 2*width)


class MyEncoder(EncoderAdapter):
    name = "my-encoder"
    paradigm = "JE"  # the default; -o paradigm overrides it per run
    description = "Template: a small ResNet trained with my own recipe (plugins/custom_encoder_template.py)"
    version = "1"  # bump when the features change for the same weights
    options = {
        "checkpoint": Option(Path, help="weights file (.pth/.safetensors)", must_exist=True),
        "paradigm": Option(str, "JE", "JE, RC or SL", choices=("JE", "RC", "SL")),
        "width": Option(int, 8, "width of the first stage"),
        "image_size": Option(int, 32, "input size the model expects"),
    }

    def preprocess(self) -> Preprocess:
        return Preprocess(input_size=self.opts["image_size"], mean=(0.485, 0.456, 0.406),
                          std=(0.229, 0.224, 0.225), interpolation="bicubic")

    def weights(self) -> dict:
        path = self.opts["checkpoint"]
        sd = find_state_dict(read_checkpoint(path), ("model", "state_dict"), path)
        if any(k.startswith("backbone.") for k in sd):  # a training checkpoint: backbone + heads
            sd, _dropped = split_keys(sd, "backbone.", ("projector.", "predictor."), self.name, "training")
        return sd

    def load(self) -> LoadedEncoder:
        model = build_model(self.opts["width"])
        strict_load(model, self.weights(), f"{self.name} {Path(self.opts['checkpoint']).name}")
        return LoadedEncoder(module=model.eval(), preprocess=self.preprocess(),
                             arch=f"my-resnet-w{self.opts['width']}", paradigm=self.opts["paradigm"],
                             feature_protocol="global-avgpool",
                             weights_sha256=sha256_file(self.opts["checkpoint"]))

    def random_init(self, seed: int) -> LoadedEncoder:
        """Optional: the same architecture with seeded random weights (the floor pretraining must beat)."""
        import torch

        torch.manual_seed(seed)
        return LoadedEncoder(module=build_model(self.opts["width"]).eval(), preprocess=self.preprocess(),
                             arch=f"my-resnet-w{self.opts['width']}", paradigm="random",
                             feature_protocol="global-avgpool", weights_sha256=None)


@hookimpl
def register_encoders(register: Any) -> None:
    register(MyEncoder)
