"""The examples run: a few training steps of LeNet-5 on real digits make the loss fall."""
import importlib.util

import numpy as np

from conftest import ROOT


def _example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_data_is_the_real_thing():
    x_train, y_train, x_test, y_test = _example("train_lenet5_digits").load_digits_32x32()
    assert x_train.shape == (1437, 1, 32, 32) and x_test.shape == (360, 1, 32, 32)
    assert set(np.unique(y_train)) == set(range(10))
    assert x_train[:, :, :4].max() == 0 and 0.9 < x_train.max() <= 1.0  # padded, scaled


def test_a_few_training_steps_make_the_loss_fall():
    example = _example("train_lenet5_digits")
    _, losses, accuracy = example.train(steps=60, log=lambda *_: None)
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert accuracy > 0.5  # far above chance (0.1) after 60 steps
