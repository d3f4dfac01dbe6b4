"""Train the simplified LeNet-5 (networks/lenet5.net) with the NumPy backend on real handwritten digits.

The data is scikit-learn's bundled digits set: 1,797 8x8 images, shipped inside the package, so
nothing is downloaded. Each image is scaled to [0, 1], upscaled 3x to 24x24 and zero-padded to
LeNet's 32x32. The split is fixed (a seeded permutation: 1,437 for training, 360 for testing).

    python examples/train_lenet5_digits.py    # 12 epochs: 99.44% test accuracy in 9.9 s on 2 cores

Everything here is plain NumPy on top of netdsl's module API: forward `m(x)`, `m.backward(dy)`,
`m.grads` and `m.weights`, so it doubles as a worked example of that API.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import netdsl


def load_digits_32x32(seed: int = 0):
    """(x_train, y_train, x_test, y_test): float32 images (N, 1, 32, 32) and integer labels."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    images = np.kron(images, np.ones((1, 3, 3), dtype=np.float32))  # 8x8 -> 24x24
    images = np.pad(images, ((0, 0), (4, 4), (4, 4)))[:, None]  # -> 1x32x32
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:1437], order[1437:]
    return images[train], digits.target[train], images[test], digits.target[test]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = float(-np.log(probs[np.arange(n), labels] + 1e-12).mean())
    grad = probs
    grad[np.arange(n), labels] -= 1
    return loss, grad / n


class SGD:
    """Stochastic gradient descent with momentum, on a module's trainable weights."""

    def __init__(self, module, lr: float = 0.05, momentum: float = 0.9):
        self.module, self.lr, self.momentum = module, lr, momentum
        self.velocity = {name: np.zeros_like(w) for name, w in module.parameters().items()}

    def step(self) -> None:
        for name, weight in self.module.parameters().items():
            v = self.velocity[name]
            v *= self.momentum
            v -= self.lr * self.module.grads[name]
            weight += v


def accuracy(module, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    module.eval()
    correct = sum(int((module(x[i:i + batch]).argmax(axis=1) == y[i:i + batch]).sum())
                  for i in range(0, len(x), batch))
    module.train()
    return correct / len(x)


def train(epochs: int = 12, batch: int = 32, lr: float = 0.05, seed: int = 0, steps: int | None = None,
          log=print):
    """Train LeNet-5; returns (module, per-step losses, test accuracy). `steps` stops early."""
    x_train, y_train, x_test, y_test = load_digits_32x32(seed)
    module = netdsl.load("lenet5").compile("numpy", dtype="float32", seed=seed)
    optimiser = SGD(module, lr=lr)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), batch):
            pick = order[i:i + batch]
            loss, grad = softmax_cross_entropy(module(x_train[pick]), y_train[pick])
            module.backward(grad)
            optimiser.step()
            losses.append(loss)
            if steps is not None and len(losses) >= steps:
                return module, losses, accuracy(module, x_test, y_test)
        log(f"epoch {epoch + 1:2d}: loss {np.mean(losses[-len(order) // batch:]):.4f}, "
            f"test accuracy {accuracy(module, x_test, y_test):.2%}")
    return module, losses, accuracy(module, x_test, y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="FILE", help="write the trained weights (.safetensors)")
    args = parser.parse_args()
    start = time.perf_counter()
    module, _, test_accuracy = train(args.epochs, lr=args.lr, seed=args.seed)
    print(f"test accuracy {test_accuracy:.2%} on 360 held-out digits, "
          f"{time.perf_counter() - start:.1f} s")
    if args.save:
        module.save(args.save)
        print(f"wrote {args.save}")


if __name__ == "__main__":
    main()
