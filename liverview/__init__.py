import os

# numpy's OpenBLAS starts a thread a core that busy-waits after import and after each product, taking
# the core the decoding workers need (a JPEG-LS load spent 0.2 s more CPU, 0.06 s more wall time).
# liverview's products are small (3 x 3 geometry, simulator textures) and give the same values on one
# thread; torch uses MKL, not OpenBLAS. Set before anything imports numpy; a user's setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
