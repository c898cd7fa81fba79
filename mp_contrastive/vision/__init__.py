"""Image self-supervised learning on top of the operators (needs the ``examples`` extra:
torchvision; tqdm, matplotlib and tensorboard are used when installed)."""

try:
    import torchvision  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("mp_contrastive.vision needs torchvision: pip install 'mp_contrastive[examples]'"
                      ) from error

from mp_contrastive.vision.augment import SimCLRAugment
from mp_contrastive.vision.data import ImageArrays, load_cifar, stratified_subset
from mp_contrastive.vision.evaluation import (
    extract_features,
    knn_accuracy,
    linear_probe,
    official_linear_probe,
)
from mp_contrastive.vision.methods import LossNodes, MethodOutput
from mp_contrastive.vision.models import ProjectionHead, SimCLRModel, resnet_cifar
from mp_contrastive.vision.optim import LARS, lars_param_groups, warmup_cosine
from mp_contrastive.vision.trainer import TrainConfig, Trainer

__all__ = [
    "ImageArrays",
    "load_cifar",
    "stratified_subset",
    "SimCLRAugment",
    "resnet_cifar",
    "ProjectionHead",
    "SimCLRModel",
    "LARS",
    "lars_param_groups",
    "warmup_cosine",
    "extract_features",
    "knn_accuracy",
    "linear_probe",
    "official_linear_probe",
    "Trainer",
    "TrainConfig",
    "MethodOutput",
    "LossNodes",
]
