"""The liver texture is a property of the patient: the same at the same place in every series."""
from __future__ import annotations

import numpy as np

from liverview.synth.texture import LiverTexture


def test_two_grids_show_the_same_texture_where_they_meet() -> None:
    texture = LiverTexture.draw(np.random.default_rng(5), 7.0, 3.0)
    thin = np.zeros((12, 64, 64), np.float32)   # 2.5 mm slices from z = 0
    thick = np.zeros((5, 64, 64), np.float32)   # 5 mm slices from z = 2.5 mm: every other thin slice
    texture.add_to(thin, np.ones(thin.shape, bool), (2.5, 0.8, 0.8))
    texture.add_to(thick, np.ones(thick.shape, bool), (5.0, 0.8, 0.8), z_origin_mm=2.5)
    np.testing.assert_allclose(thick, thin[1:11:2], atol=1e-3)
    assert not np.allclose(thin[0], thin[1], atol=1.0), "the field varies along z"


def test_the_field_has_the_drawn_spread_and_stays_where_it_is_put() -> None:
    texture = LiverTexture.draw(np.random.default_rng(11), 6.0, 2.0)
    hu = np.full((20, 128, 128), 100.0, np.float32)
    where = np.zeros(hu.shape, bool)
    where[:, 10:118, 10:118] = True
    texture.add_to(hu, where, (3.0, 0.8, 0.8))
    assert np.all(hu[~where] == 100.0)
    assert 3.0 < float(hu[where].std()) < 9.0 and abs(float(hu[where].mean()) - 100.0) < 4.0
    # Smooth at the pixel scale (correlation length 2 mm against 0.8 mm pixels), unlike noise.
    neighbours = np.corrcoef(hu[5, 10:118, 10:117].ravel(), hu[5, 10:118, 11:118].ravel())[0, 1]
    assert neighbours > 0.8
    flat = np.full(hu.shape, 100.0, np.float32)
    LiverTexture.draw(np.random.default_rng(11), 0.0, 2.0).add_to(flat, where, (3.0, 0.8, 0.8))
    assert np.all(flat == 100.0)
