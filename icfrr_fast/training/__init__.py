"""icfrr_fast.training: train the retrieval backbones whose features ICFRR re-ranks.

Shipped in the wheel with its configurations (``configs/*.yaml``, :data:`.config.CONFIGS_DIR`); install its
dependencies with ``pip install "icfrr_fast[train]"``. ``import icfrr_fast`` never imports it; importing it does
not import timm or torchvision (they load when a backbone or a transform is built).

Pieces (one concept per module):

* :mod:`.backbones` -- ``create_backbone(name, weights=path)``: timm models by name, a registry of tiny models;
  :mod:`.weights` reads local weight files; :mod:`.vitx` the four-stream cross-attention ViT-x;
* :mod:`.losses` -- classification, cross-domain triplet, distribution alignment, semantic neighbourhood, mixture
  prediction, ViT-x distillation; :mod:`.mixup` the within-to-cross-domain mixing curriculum;
  :mod:`.class_embeddings` reads class vectors;
* :mod:`.data` -- benchmark layouts, file lists, folders, the pair sampler, transforms, the scikit-image toy set;
* :mod:`.config` -- the dataclass configuration (YAML/TOML + flags); :mod:`.model`, :mod:`.objective`,
  :mod:`.optim`, :mod:`.checkpoint`, :mod:`.distributed`, :mod:`.run_log`;
* :mod:`.engine` -- ``train_one_epoch`` and ``evaluate``; :mod:`.validation` -- metrics before/after ICFRR;
  :mod:`.extraction` -- features and their cache; :mod:`.train` -- ``fit(cfg)``.

Example:
    >>> from icfrr_fast.training import Config, fit                        # doctest: +SKIP
    >>> cfg = Config.from_dict(load_config("icfrr_fast/training/configs/smoke.yaml"))  # doctest: +SKIP
    >>> result = fit(cfg)                                                   # doctest: +SKIP
"""

from .backbones import Backbone, create_backbone, list_backbones, register_backbone
from .config import Config, load_config
from .model import RetrievalModel
from .train import fit, load_model
from .vitx import ViTX

__all__ = ["Backbone", "create_backbone", "list_backbones", "register_backbone", "Config", "load_config",
           "RetrievalModel", "fit", "load_model", "ViTX"]
