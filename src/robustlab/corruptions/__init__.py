"""Input corruptions: image (ImageNet-C / CIFAR-C / MNIST-C), frequency-band and tabular; metrics."""

__all__: list[str] = []
