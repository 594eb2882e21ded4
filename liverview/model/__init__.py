"""The CNN: transforms shared by training and the app, training, evaluation, inference, Grad-CAM and
model bundles. The only package that imports torch/torchvision (lazily where start-up matters)."""
from __future__ import annotations
