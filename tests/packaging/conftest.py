"""Fixtures for the packaging tests: model bundles that need no training, and the demo study."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


def write_untrained_bundle(folder: Path, architecture: str, size: int) -> Path:
    """A valid bundle with random weights: the self-test checks the pipeline, not the model's skill."""
    import torch

    from liverview.model.bundle_writer import save_bundle
    from liverview.model.network import build_network
    from liverview.model.transforms import PreprocessConfig

    torch.manual_seed(0)
    return save_bundle(folder, build_network(architecture, len(CLASSES)), architecture=architecture, classes=CLASSES,
                       preprocess_config=PreprocessConfig(size=size), name="packaging-test-model", version="0.0.0")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return write_untrained_bundle(tmp_path_factory.mktemp("tiny-model") / "bundle", "tiny_cnn", 64)


@pytest.fixture(scope="session")
def mobilenet_bundle(tmp_path_factory) -> Path:
    """The app's default architecture: loading it exercises torchvision (in the frozen app, too)."""
    return write_untrained_bundle(tmp_path_factory.mktemp("mobilenet-model") / "bundle", "mobilenet_v3_small", 224)


@pytest.fixture(scope="session")
def demo_copy_source(tmp_path_factory) -> Path:
    """The full-size demo study, generated once; `with_demo` copies it into a test's user data."""
    from liverview.synth.demo import write_demo_study

    return write_demo_study(tmp_path_factory.mktemp("demo-source")).out_dir


@pytest.fixture
def with_demo(demo_copy_source, _private_user_data) -> Path:
    """This test's user data folder with the demo study already in place (as after a first --demo)."""
    from liverview.paths import demo_study_dir

    shutil.copytree(demo_copy_source, demo_study_dir(), dirs_exist_ok=True)
    return _private_user_data
