"""An exponential moving average of the weights, the model that is validated and saved.

On a few hundred images the validation score jumps from epoch to epoch; the average of the
last few epochs' weights is steadier and usually better than any single epoch's weights.
The horizon is given in epochs (``--ema-epochs``) and turned into a per-step decay.
"""
import copy


class WeightAverage(object):
    """Keeps ``model``'s weights averaged over roughly the last ``epochs`` epochs."""

    def __init__(self, model, epochs, steps_per_epoch):
        self.model = copy.deepcopy(model)
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.decay = 1.0 - 1.0 / max(1.0, float(epochs) * steps_per_epoch)
        self.updates = 0

    def update(self, model):
        """Fold the current weights in; early on the average follows them more closely."""
        import torch
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        with torch.no_grad():
            live = model.state_dict()
            for name, avg in self.model.state_dict().items():
                value = live[name]
                if avg.dtype.is_floating_point:
                    avg.mul_(decay).add_(value.detach(), alpha=1.0 - decay)
                else:
                    avg.copy_(value)

    def state(self):
        return {"updates": self.updates, "decay": self.decay}

    def restore(self, state_dict, state):
        self.model.load_state_dict(state_dict)
        self.updates = int(state.get("updates", 0))
