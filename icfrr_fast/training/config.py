"""Training configuration: nested dataclasses loaded from YAML or TOML, overridden by command-line flags, saved
beside the outputs (``config.yaml``).

Sections: ``model``, ``data``, ``loss``, ``optim``, ``train``, ``eval``. Every field is also a flag
``--<section>.<field> VALUE`` (``--optim.lr 3e-4``, ``--eval.precision_at 100,200``, ``--model.weights none``);
values from the file and the flags are checked against the field types, and unknown keys are errors. This module
imports neither torch nor timm, so building the CLI parser stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

__all__ = ["ModelConfig", "DataConfig", "LossConfig", "OptimConfig", "TrainConfig", "EvalConfig", "Config",
           "load_config", "add_config_arguments", "config_from_args", "save_config", "SECTIONS"]


@dataclass
class ModelConfig:
    """Backbone and heads."""

    #: registered (icfrr_vit_tiny, icfrr_vit_small32) or any timm model name
    backbone: str = "vit_base_patch16_224"
    #: local weights file (.pth/.pt/.bin/.safetensors/.npz); none = random init
    weights: Optional[str] = None
    #: input side in pixels (default: the backbone's)
    img_size: Optional[int] = None
    #: stochastic depth rate passed to the timm model
    drop_path: float = 0.0
    #: backbone parameters to freeze: fnmatch patterns over the network's parameter names (e.g. _blocks.[0-7].*);
    #: fully frozen normalisation layers also keep their running statistics
    freeze: List[str] = field(default_factory=list)
    #: train with ViT-x (four weight-shared streams: self A, self B, cross A->B, cross B->A); ViT backbones only
    vitx: bool = False


@dataclass
class DataConfig:
    """Benchmark, split and sampling (layouts in icfrr_fast/training/README.md)."""

    #: sketchy_25, sketchy_21, tuberlin_30, quickdraw, office_home, domainnet, folders, skimage_toy, emoji
    benchmark: str = "folders"
    #: dataset folder (for skimage_toy: where the generated images go)
    root: str = ""
    #: filelist (SAKE-style split folder) or folders (<root>/<domain>/<class>/<image>); benchmark default if none
    layout: Optional[str] = None
    #: split folder of the file lists (default: the benchmark's, e.g. zeroshot1 for sketchy_25)
    split_dir: Optional[str] = None
    #: query domain (default: the benchmark's, e.g. sketch)
    query_domain: Optional[str] = None
    #: gallery domain (default: the benchmark's, e.g. photo / real)
    gallery_domain: Optional[str] = None
    #: training domains for folder layouts (default: query and gallery; domainnet: all but the query domain)
    train_domains: Optional[List[str]] = None
    #: unseen (test) classes: a file with one class per line, or a list of names
    unseen_classes: Optional[List[str]] = None
    #: draw this many unseen classes at random (split_seed) when unseen_classes is not given
    num_unseen: int = 0
    split_seed: int = 0
    #: with no unseen classes: fraction of each class's images held out for evaluation (not zero-shot)
    holdout_fraction: float = 0.25
    #: domainnet gallery: unseen (unseen classes only) or seen+unseen
    gallery: str = "unseen"
    #: domains that get the sketch augmentation and white fill
    sketch_domains: List[str] = field(default_factory=lambda: ["sketch", "quickdraw"])
    #: P classes per batch, K cross-domain pairs per class (batch = 2 P K images)
    classes_per_batch: int = 16
    pairs_per_class: int = 2
    #: batches per epoch (default: one pass over the query-domain training images)
    batches_per_epoch: Optional[int] = None
    num_workers: int = 4
    eval_batch_size: int = 128
    #: keep every n-th evaluation query / gallery image (quick validation on big benchmarks)
    query_stride: int = 1
    gallery_stride: int = 1
    #: skimage_toy only: classes, images per class and domain, stored image side
    toy_classes: int = 8
    toy_per_class: int = 16
    toy_image_size: int = 48
    #: emoji only: label level of training (seen emoji) and of validation (unseen emoji): group or subgroup
    emoji_train_level: str = "subgroup"
    emoji_eval_level: str = "group"


@dataclass
class LossConfig:
    """Loss weights and parameters (a weight of 0 switches a loss off)."""

    ce: float = 1.0
    label_smoothing: float = 0.0
    triplet: float = 1.0
    margin: float = 0.2
    #: batch_hard or random
    mining: str = "batch_hard"
    #: distribution alignment KL(softmax(z) || softmax(f)), z ~ N(0, I)
    align: float = 0.1
    #: semantic-neighbourhood and mixture-prediction losses (need class_embeddings)
    semantic: float = 0.0
    mixture: float = 0.0
    #: class-embedding file (.txt word2vec/GloVe, .json, .pth)
    class_embeddings: Optional[str] = None
    semantic_neighbours: int = 5
    semantic_temperature: float = 0.1
    neighbourhood_temperature: float = 0.1
    #: mixup Beta(alpha, alpha); curriculum p_cross(t) = mixup_cross_max * min(1, t / mixup_ramp)
    mixup_alpha: float = 0.4
    mixup_cross_max: float = 0.5
    mixup_ramp: float = 0.5
    #: ViT-x: weight of the classification loss on the cross streams, and of the distillation loss
    cross_ce: float = 1.0
    distill: float = 0.0
    #: mse, cosine or kl
    distill_form: str = "mse"
    distill_temperature: float = 1.0


@dataclass
class OptimConfig:
    """AdamW with a cosine schedule."""

    #: head learning rate; the backbone gets lr * backbone_lr_mult
    lr: float = 1e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 5e-4
    beta1: float = 0.9
    beta2: float = 0.999
    #: linear warm-up (epochs, may be fractional), then cosine decay to lr * min_lr_ratio
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    #: clip the global gradient norm (none = off)
    grad_clip: Optional[float] = None


@dataclass
class TrainConfig:
    """The loop."""

    epochs: int = 10
    #: micro-batches per optimizer step
    accum_steps: int = 1
    #: auto (bf16 on CUDA, off on CPU), bf16, fp16 (CUDA), none
    amp: str = "auto"
    #: auto (cuda when available), cpu, cuda, cuda:N
    device: str = "auto"
    seed: int = 0
    #: torch intra-op threads (none: torch's default); 1 is fastest on a busy small CPU
    threads: Optional[int] = None
    output_dir: str = "runs/icfrr"
    #: none, auto (output_dir/last.pth when present) or a checkpoint path
    resume: Optional[str] = None
    #: also write last.pth every n optimizer steps (0: at epoch ends only)
    save_every_steps: int = 0
    #: stop after this many optimizer steps in total (none: run all epochs)
    max_steps: Optional[int] = None
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True


@dataclass
class EvalConfig:
    """Validation: features -> ranking -> ICFRR -> metrics per iteration."""

    #: validate every n epochs (0: only at the end)
    every: int = 1
    #: also validate before the first step
    at_start: bool = False
    k_g: int = 256
    k_q: int = 250
    beta: float = 0.5
    iters: int = 5
    #: reference or paper (docs/design.md §2)
    semantics: str = "reference"
    map_at: List[int] = field(default_factory=lambda: [200])
    precision_at: List[int] = field(default_factory=lambda: [100, 200])
    #: queries per re-ranking chunk (bounds memory to chunk x G)
    chunk_size: int = 256
    #: metric deciding best.pth (base/..., itN/..., icfrr/... = last iteration)
    best_metric: str = "icfrr/mAP@all"


SECTIONS = {"model": ModelConfig, "data": DataConfig, "loss": LossConfig, "optim": OptimConfig,
            "train": TrainConfig, "eval": EvalConfig}

_CHOICES = {
    ("data", "layout"): (None, "filelist", "folders"),
    ("data", "gallery"): ("unseen", "seen+unseen"),
    ("data", "emoji_train_level"): ("group", "subgroup"),
    ("data", "emoji_eval_level"): ("group", "subgroup"),
    ("loss", "mining"): ("batch_hard", "random"),
    ("loss", "distill_form"): ("mse", "cosine", "kl"),
    ("train", "amp"): ("auto", "bf16", "fp16", "none"),
    ("eval", "semantics"): ("reference", "paper"),
}
_NON_NEGATIVE = {("loss", k) for k in ("ce", "label_smoothing", "triplet", "margin", "align", "semantic", "mixture",
                                       "cross_ce", "distill")} | {
    ("optim", "weight_decay"), ("optim", "warmup_epochs"), ("optim", "min_lr_ratio"), ("eval", "beta"),
    ("eval", "iters"), ("eval", "every"), ("train", "save_every_steps"), ("data", "num_workers"),
    ("data", "num_unseen"), ("train", "seed"), ("data", "split_seed")}
_POSITIVE = {("optim", "lr"), ("optim", "backbone_lr_mult"), ("train", "epochs"), ("train", "accum_steps"),
             ("data", "classes_per_batch"), ("data", "pairs_per_class"), ("data", "eval_batch_size"),
             ("data", "query_stride"), ("data", "gallery_stride"), ("eval", "k_g"), ("eval", "k_q"),
             ("eval", "chunk_size"), ("loss", "mixup_alpha"), ("loss", "semantic_neighbours"),
             ("loss", "semantic_temperature"), ("loss", "neighbourhood_temperature"), ("loss", "distill_temperature"),
             ("train", "log_every"), ("data", "toy_per_class")}


@dataclass
class Config:
    """The whole configuration (one dataclass per section)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], validate: bool = True) -> Config:
        """Build from ``{section: {field: value}}``; unknown sections/fields and mistyped values raise ValueError."""
        if not isinstance(d, dict):
            raise TypeError(f"a config must be a mapping of sections; got {type(d).__name__}")
        cfg = cls()
        for section, values in d.items():
            if section not in SECTIONS:
                raise ValueError(f"unknown config section {section!r}; known: {', '.join(SECTIONS)}")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise TypeError(f"config section {section!r} must be a mapping; got {type(values).__name__}")
            for key, value in values.items():
                cfg.set(f"{section}.{key}", value)
        if validate:
            cfg.validate()
        return cfg

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """``{section: {field: value}}`` of plain Python values (YAML/TOML/checkpoint friendly)."""
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}

    def set(self, dotted: str, value: Any) -> None:
        """Set ``section.field`` to ``value`` (strings are parsed by the field's type, as on the command line)."""
        section, _, name = dotted.partition(".")
        if section not in SECTIONS or not name:
            raise ValueError(f"unknown config key {dotted!r}: expected <section>.<field> with section one of "
                             f"{', '.join(SECTIONS)}")
        fields = _fields(SECTIONS[section])
        if name not in fields:
            raise ValueError(f"unknown config key {dotted!r}; {section} has: {', '.join(fields)}")
        setattr(getattr(self, section), name, _coerce(dotted, value, fields[name]))

    def validate(self) -> None:
        """Check value ranges and choices; raise ValueError naming the key."""
        for (s, k), choices in _CHOICES.items():
            v = getattr(getattr(self, s), k)
            if v not in choices:
                raise ValueError(f"{s}.{k} must be one of {[c for c in choices if c is not None]}; got {v!r}")
        for s, k in _NON_NEGATIVE:
            v = getattr(getattr(self, s), k)
            if v < 0:
                raise ValueError(f"{s}.{k} must be >= 0; got {v}")
        for s, k in _POSITIVE:
            v = getattr(getattr(self, s), k)
            if not v > 0:
                raise ValueError(f"{s}.{k} must be > 0; got {v}")
        if not 0.0 <= self.data.holdout_fraction < 1.0:
            raise ValueError(f"data.holdout_fraction must be in [0, 1); got {self.data.holdout_fraction}")
        if not 0.0 <= self.loss.mixup_cross_max <= 1.0:
            raise ValueError(f"loss.mixup_cross_max must be in [0, 1]; got {self.loss.mixup_cross_max}")
        if self.loss.label_smoothing >= 1.0:
            raise ValueError(f"loss.label_smoothing must be < 1; got {self.loss.label_smoothing}")
        if (self.loss.semantic > 0 or self.loss.mixture > 0) and not self.loss.class_embeddings:
            raise ValueError("loss.class_embeddings (a file of class vectors) is required when loss.semantic or "
                             "loss.mixture is > 0")
        if self.loss.distill > 0 and not self.model.vitx:
            raise ValueError("loss.distill > 0 needs model.vitx: true (it distils the cross-attention streams)")
        if self.train.max_steps is not None and self.train.max_steps < 1:
            raise ValueError(f"train.max_steps must be >= 1 or none; got {self.train.max_steps}")
        if self.train.threads is not None and self.train.threads < 1:
            raise ValueError(f"train.threads must be >= 1 or none; got {self.train.threads}")
        if self.optim.grad_clip is not None and not self.optim.grad_clip > 0:
            raise ValueError(f"optim.grad_clip must be > 0 or none; got {self.optim.grad_clip}")
        if self.model.img_size is not None and self.model.img_size < 8:
            raise ValueError(f"model.img_size must be >= 8 or none; got {self.model.img_size}")
        if not self.data.root and self.data.benchmark not in ("skimage_toy", "emoji"):
            raise ValueError(f"data.root is required (the {self.data.benchmark} dataset folder)")
        for K in list(self.eval.map_at) + list(self.eval.precision_at):
            if K < 1:
                raise ValueError(f"eval.map_at / eval.precision_at must hold positive ints; got {K}")


def _fields(cls) -> Dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from YAML/TOML or a command-line string) to the field type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union and type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if origin in (list, List):
        (inner,) = args
        if isinstance(value, str):
            s = value.strip().strip("[]")
            value = [v.strip().strip("'\"") for v in s.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list; got {value!r}")
        return [_coerce(key, v, inner) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise ValueError(f"{key} must be a bool (true/false); got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{key} must be an int; got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{key} must be an int; got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number; got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number; got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{key} must be a string; got {value!r}")
    raise TypeError(f"unsupported config field type {tp} for {key}")  # pragma: no cover (a bug in this module)


CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
"""The configurations shipped with the package (``smoke.yaml``, ``emoji.yaml``)."""


def load_config(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file into ``{section: {field: value}}``.

    ``path`` is a file, or the name of a configuration shipped in the package (``CONFIGS_DIR``): ``"smoke"``,
    ``"emoji"`` (with or without ``.yaml``), so the shipped configurations work after ``pip install`` from any folder.

    Raises:
        FileNotFoundError: no such file and no shipped configuration of that name.
        ValueError: another suffix or a syntax error.
    """
    path = Path(path)
    if not path.is_file():
        shipped = CONFIGS_DIR / (path.name if path.suffix else path.name + ".yaml")
        if path.parent != Path(".") or not shipped.is_file():
            names = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
            raise FileNotFoundError(f"config file not found: {path} (shipped configurations: {names})")
        path = shipped
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML: {e}") from e
    elif suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python < 3.11
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML: {e}") from e
    else:
        raise ValueError(f"config must be a .yaml/.yml or .toml file; got {path.name}")
    return data or {}


def save_config(cfg: Config, path: Union[str, Path]) -> Path:
    """Write the resolved configuration as YAML (atomically)."""
    import yaml

    from icfrr_fast.io import atomic_write

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` and one ``--<section>.<field>`` flag per config field (defaults shown in help)."""
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML or TOML configuration file, or a shipped one by name (smoke, emoji); flags override it")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options", (cls.__doc__ or "").strip().splitlines()[0])
        defaults, docs = cls(), _field_docs(cls)
        for name, tp in _fields(cls).items():
            default = getattr(defaults, name)
            text = f"{docs[name]} " if name in docs else ""
            group.add_argument(f"--{section}.{name}", dest=f"{section}.{name}", metavar=_metavar(tp),
                               default=argparse.SUPPRESS, help=f"{text}(default: {default})".replace("%", "%%"))


def _metavar(tp) -> str:
    if typing.get_origin(tp) is Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) in (list, List):
        return "A,B,..."
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR"}.get(tp, "VALUE")


def _field_docs(cls) -> Dict[str, str]:
    """``{field: text}`` from the ``#:`` comment lines above each field in the class source."""
    import inspect

    docs: Dict[str, str] = {}
    pending: List[str] = []
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):  # pragma: no cover (source unavailable, e.g. a zipped install)
        return docs
    for line in lines:
        s = line.strip()
        if s.startswith("#:"):
            pending.append(s[2:].strip())
            continue
        if pending and ":" in s and s.split(":", 1)[0].strip().isidentifier():  # "name: type = default"
            docs[s.split(":", 1)[0].strip()] = " ".join(pending)
        pending = []
    return docs


def config_from_args(args: argparse.Namespace, base: Optional[Dict[str, Any]] = None) -> Config:
    """The configuration of a parsed command line: ``base`` (e.g. a checkpoint's configuration), then the
    ``--config`` file, then every flag given; validated."""
    cfg = Config.from_dict(base or {}, validate=False)
    data = load_config(args.config) if getattr(args, "config", None) else {}
    for section, values in (data or {}).items():
        if section not in SECTIONS:
            raise ValueError(f"unknown config section {section!r}; known: {', '.join(SECTIONS)}")
        for key, value in (values or {}).items():
            cfg.set(f"{section}.{key}", value)
    for key, value in vars(args).items():
        if "." in key:
            cfg.set(key, value)
    cfg.validate()
    return cfg
