"""docs/figures/lesion-phases.png: one simulated lesion per class (rows) in the four contrast phases
(columns: non-contrast, arterial, portal-venous, delayed), liver window, the same anatomy and noise.
Run from the repository root: .venv/bin/python docs/figures/lesion_phases.py"""
import cv2
import numpy as np

from liverview.synth.phantom import make_abdomen_phantom
from liverview.synth.acquisition import simulate_acquisition
from liverview.synth.lesions import sample_varied_lesion_spec, place_lesions, insert_lesion, Enhancement, LesionClass
from liverview.synth.phases import Phase, lesion_in_phase, TABLES
shape = (30, 256, 256)
sp = (3.0, 1.2, 1.2)
liver, blood = 112.0, 180.0
scale = blood / TABLES[Phase.PORTAL_VENOUS].portal_vein
base = make_abdomen_phantom(shape, sp, np.random.default_rng(3), liver_hu=liver, blood_pool_hu=blood, top_s_mm=15)
rng = np.random.default_rng(1)
reqs = [(LesionClass.BENIGN_CYST, 22.0), (LesionClass.HEMANGIOMA, 30.0), (LesionClass.HCC, 32.0), (LesionClass.METASTASIS, 28.0)]
specs = place_lesions(base.masks["liver"], sp, reqs, rng)
rows=[]
for k, spec in enumerate(specs):
    spec = sample_varied_lesion_spec(spec.lesion_class, spec.centre_mm_zyx, 2*max(spec.radii_mm_zyx), 100+k, Enhancement(liver, blood))
    tiles=[]
    for ph in Phase:
        p = make_abdomen_phantom(shape, sp, np.random.default_rng(3), liver_hu=liver, blood_pool_hu=blood, phase=ph, top_s_mm=15)
        s2 = lesion_in_phase(spec, ph, liver, scale)
        insert_lesion(p.hu, p.masks["liver"], s2, sp)
        simulate_acquisition(p.hu, sp, np.random.default_rng(5), noise_sigma_hu=10)
        z = int(round(spec.centre_mm_zyx[0] / sp[0]))
        cy = int(spec.centre_mm_zyx[1] / sp[1])
        cx = int(spec.centre_mm_zyx[2] / sp[2])
        img = np.clip((p.hu[z].astype(float)-(70-170/2))/170*255,0,255).astype(np.uint8)
        crop = img[max(cy-40,0):cy+40, max(cx-40,0):cx+40]
        crop = cv2.resize(crop,(160,160),interpolation=cv2.INTER_NEAREST)
        cv2.putText(crop, f"{spec.lesion_class.value[:6]} {ph.value[:6]}", (3,12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
        tiles.append(crop)
    rows.append(np.hstack(tiles))
cv2.imwrite('docs/figures/lesion-phases.png', np.vstack(rows))
