"""A batched radiomics engine in torch that reproduces pyradiomics' values (issue 25, in progress).

pyradiomics (``pyradiomics-bhklab`` 3.1.4) stays the reference backend
(:class:`usher2.features.radiomics.RadiomicsExtractor`). This package computes the same 2D
features for a *batch* of frames and masks at once, in float64, on the CPU or a CUDA device:

=================  ==============================================================================
``discretise``     pyradiomics' grey-level discretisation (``binWidth``/``binCount``) per ROI
``firstorder``     first-order statistics (with ``voxelArrayShift``)
``shape2d``        2D shape (marching-squares perimeter, mesh area, diameters, moments)
``glcm``           grey-level co-occurrence (4 in-plane angles, distance 1, symmetric)
``glrlm``          grey-level run length
``glszm``          grey-level size zone (8-connected zones in 2D)
``gldm``           grey-level dependence (``alpha``)
``ngtdm``          neighbouring grey-tone difference
``filters``        the Wavelet (``pywt`` stationary transform, pyradiomics' padding) and LoG
                   (SimpleITK's recursive Gaussian, spacing in mm) image types
``engine``         :class:`~usher2.features.torchrad.engine.TorchRadiomics`: the columns of a
                   parameter set (or a subset) for a batch of frames, from the modules above
=================  ==============================================================================

**Status.** Every default column agrees with pyradiomics on the test ROIs
(``tests/features/torchrad``), but on larger frames a filtered (LoG, Wavelet) pixel whose value
lies within float32 rounding of a bin edge can land in the neighbouring bin (pyradiomics' filters
round in float32, these compute in float64 and round the result), which moves that image type's
texture features by up to ~5e-3 relative (``python bench/torchrad.py`` prints the largest
difference per image type and class, and the speed). The engine is not yet the scoring default
and not yet faster than pyradiomics on one CPU core: see issue 25.

**Batches.** Every function takes ``(B, H, W)`` tensors: the images (float, the grey levels
pyradiomics sees, i.e. pixels x 255), the masks (bool) and, for the texture classes, the
discretised images (int64, 0 outside the ROI). ROIs of different sizes share a batch by
padding; nothing loops over ROIs in Python on the hot path.

**Equality.** A feature ships in this backend only with a test that holds it within 1e-6
relative (1e-9 absolute near zero) of pyradiomics on simulated ROIs, BUS-BRA ROIs (when
``../shared`` is present) and the edge cases (1-pixel wide, border-touching, constant image,
tiny and whole-frame ROIs): ``tests/features/torchrad/``.
"""
