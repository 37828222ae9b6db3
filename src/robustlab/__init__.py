"""robustlab: classifiers that stay right under noise.

Label noise, input corruptions, adversarial perturbations, certification, calibration and repair,
with a one-command robustness scan. Importing robustlab does no work: subpackages are imported
on use.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
