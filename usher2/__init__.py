"""usher2: HER2 status from breast-ultrasound frames (and the same core for MRI studies)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
