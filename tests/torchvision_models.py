"""Small torchvision detectors for the tests (no detectron2 here: the torchvision path's tests
import it where detectron2 is blocked): torchvision's own Faster R-CNN, RetinaNet and FCOS
classes, on a ResNet-18 FPN, untrained. The losses and heads are torchvision's; only the
backbone is smaller than the ResNet-50 of the model builders, which costs minutes to train."""
import torch


def torchvision_dense_model(arch, num_classes=4, size=256):
    """torchvision's RetinaNet or FCOS on a ResNet-18 FPN, untrained, inputs of size px."""
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                   returned_layers=[2, 3, 4],
                                   extra_blocks=LastLevelP6P7(256, 256))
    cls = RetinaNet if arch == "retinanet" else FCOS
    return cls(backbone, num_classes=num_classes, min_size=size, max_size=size).train()


DENSE_TARGETS = [{"boxes": torch.tensor([[10.0, 10, 30, 30], [40, 40, 110, 100], [0, 0, 250, 250]]),
                  "labels": torch.tensor([1, 2, 3])},
                 {"boxes": torch.tensor([[100.0, 120, 120, 136]]), "labels": torch.tensor([2])},
                 {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}]


def torchvision_faster_rcnn(num_classes=91, min_size=320, max_size=480, trainable_layers=5):
    """torchvision's FasterRCNN (its RPN, RoIHeads and fastrcnn_loss) on a ResNet-18 FPN whose
    last trainable_layers ResNet stages train (0: only the FPN and the heads), sampling 128 RoIs
    an image (torchvision's default 512 makes RoIAlign's backward most of a CPU step)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None,
                                   trainable_layers=trainable_layers)
    return FasterRCNN(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size,
                      box_batch_size_per_image=128)
