"""The learning-rate schedule: linear warm-up per iteration, then step decay per epoch.

lr(epoch e, iteration k of n) = base_lr * warmup * gamma ** (e // step), with
e counted from 0 and warmup = (e * n + k + 1) / (warmup_epochs * n) during the
first warmup_epochs epochs, else 1. With the authors' defaults (2 warm-up
epochs, step 4, gamma 0.1) epochs 1-4 run at the base rate (after warm-up),
5-8 at a tenth, and so on, as their StepLR does. The authors' warm-up starts at
exactly 0; this one starts one iteration in (1 / (warmup_epochs * n)), so no
step is wasted. The schedule is a pure function of (epoch, iteration): a
resumed run needs only the epoch to continue it exactly.
"""


def lr_factor(epoch, iteration, iters_per_epoch, warmup_epochs=2, step=4, gamma=0.1):
    t = epoch * iters_per_epoch + iteration
    warm = warmup_epochs * iters_per_epoch
    factor = min(1.0, (t + 1) / warm) if warm > 0 else 1.0
    if step and step > 0:
        factor *= gamma ** (epoch // step)
    return factor


class WarmupStepSchedule:
    """Sets each parameter group's lr to its base lr times lr_factor(...)."""

    def __init__(self, optimizer, base_lrs, iters_per_epoch, warmup_epochs=2, step=4, gamma=0.1):
        self.optimizer = optimizer
        self.base_lrs = list(base_lrs)
        self.iters_per_epoch = iters_per_epoch
        self.warmup_epochs, self.step, self.gamma = warmup_epochs, step, gamma

    def set(self, epoch, iteration):
        f = lr_factor(epoch, iteration, self.iters_per_epoch, self.warmup_epochs, self.step, self.gamma)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f
        return f

    def state_dict(self):
        return {"kind": "warmup+step", "base_lrs": list(self.base_lrs), "warmup_epochs": self.warmup_epochs,
                "step": self.step, "gamma": self.gamma}
