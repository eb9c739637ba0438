"""Image transforms for training and testing, ending in csra's one preprocessing.

Training follows the CSRA authors' order: random horizontal flip, random
resized crop to S x S (scale 0.7-1.0 of the area, default aspect ratios), then
Resize((S, S)); test images are only resized to S x S. Both end in
model.preprocessing.to_tensor, so pixels are scaled (and normalised) exactly as
the app and evaluation do.
"""
from torchvision import transforms


class TrainTransform:
    def __init__(self, preprocessing, crop_scale=(0.7, 1.0), flip=True):
        size = preprocessing.image_size
        steps = [transforms.RandomHorizontalFlip()] if flip else []
        if crop_scale is not None:
            steps.append(transforms.RandomResizedCrop(size, scale=tuple(crop_scale)))
        steps.append(transforms.Resize((size, size)))
        self.augment = transforms.Compose(steps)
        self.preprocessing = preprocessing

    def __call__(self, image):
        return self.preprocessing.to_tensor(self.augment(image))


class EvalTransform:
    def __init__(self, preprocessing):
        self.preprocessing = preprocessing

    def __call__(self, image):
        return self.preprocessing(image)
