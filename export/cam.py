"""Class activation maps inside the exported graph (``--cam``).

For a ResNet, the logits are ``fc(mean over h, w of F)`` where ``F`` (N, C, h, w) is the
last convolution stage's output.  The class activation map of class k is
``sum_c fc.weight[k, c] * F[:, c]`` (Zhou et al., 2016): no gradients, one 1x1
convolution.  The graph keeps the map of the predicted (argmax) class, min-max
normalised to [0, 1] per image, as a second output ``cam_0`` of shape (N, h, w).
"""
from oncolens.appliance.errors import UsageError

EPS = 1e-6


def is_resnet(model):
    """torchvision's ResNet layout: conv1 ... layer4, avgpool, fc (Linear)."""
    import torch
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
             "avgpool", "fc")
    return all(hasattr(model, n) for n in names) and isinstance(model.fc, torch.nn.Linear)


def require_resnet(model, arch):
    if not is_resnet(model):
        raise UsageError("--cam: arch '{}' is not a ResNet (conv1..layer4 + avgpool + fc); "
                         "class activation maps are exported for the ResNet family only "
                         "(resnet18/34/50/...)".format(arch))


def resnet_features(model, x):
    """The last convolution stage's output (N, C, h, w)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def cam_from_features(features, logits, fc_weight):
    """Predicted-class CAM from features, logits and fc weights, normalised per image."""
    import torch
    maps = torch.nn.functional.conv2d(features, fc_weight[:, :, None, None])  # (N, K, h, w)
    top = torch.amax(logits, dim=1, keepdim=True)
    onehot = (logits == top).to(maps.dtype)                                   # (N, K)
    onehot = onehot / onehot.sum(dim=1, keepdim=True)                         # ties: mean
    cam = (maps * onehot[:, :, None, None]).sum(dim=1)                        # (N, h, w)
    low = torch.amin(cam, dim=(1, 2), keepdim=True)
    high = torch.amax(cam, dim=(1, 2), keepdim=True)
    return (cam - low) / (high - low + EPS)


def with_cam(model, activation=True):
    """``model`` returning (probabilities or logits, cam); raises UsageError for non-ResNets."""
    import torch

    class WithCam(torch.nn.Module):
        def __init__(self, net):
            super(WithCam, self).__init__()
            self.net = net

        def forward(self, x):
            features = resnet_features(self.net, x)
            logits = self.net.fc(torch.flatten(self.net.avgpool(features), 1))
            cam = cam_from_features(features, logits, self.net.fc.weight)
            out = torch.softmax(logits, dim=1) if activation else logits
            return out, cam

    return WithCam(model).eval()
