"""Ultrasound domain randomisation: what other scanners and hospitals do to a frame.

The segmenter trained on BUS-BRA's two GE scanners lost 0.14 Dice on its Toshiba frames and
0.16 on another hospital's (issue 23). :func:`domain_randomisation` is an albumentations pipeline
that varies what differs between scanners and sites, so that training sees a family of them:

* **intensity** — gamma, gain and contrast (albumentations), a change of the displayed dynamic
  range of the log compression (:class:`DynamicRange`) and depth-dependent gain errors
  (:class:`TGCRamp`, a smooth random time-gain-compensation curve);
* **resolution and speckle** — down/up-sampling (``Downscale``), anisotropic blur standing for a
  wider or rotated point-spread function (``AdvancedBlur``) and multiplicative speckle-like noise
  of random grain size (:class:`SpeckleNoise`);
* **artefacts** — calipers, dotted measurement lines and burned-in text like BUS-BRA's
  (:class:`BurnedInAnnotations`), acoustic shadow bands (:class:`AcousticShadow`), a
  sector/trapezoid scan area with black outside (:class:`ScanArea`) and JPEG compression;
* **geometry** — scale, aspect, rotation ±10°, translation, horizontal flips and crops that may
  cut the lesion (albumentations). Vertical flips are never used: depth runs downwards.

Only what albumentations lacks is written here (the five classes above). Every transform draws
its parameters from the generator albumentations seeds (``self.random_generator``), so
:func:`reseed` makes a batch reproducible. Frames are 2-D ``uint8`` grey images; the
mask is changed only by geometry and by :class:`ScanArea` (no lesion is visible outside the scan
area).

Example:
    >>> import numpy as np
    >>> aug = domain_randomisation(128)
    >>> reseed(aug, 0)
    >>> img = np.full((128, 128), 100, np.uint8); m = np.zeros((128, 128), np.uint8); m[40:80, 40:80] = 1
    >>> out = aug(image=img, mask=m)
    >>> out["image"].shape, out["image"].dtype, out["mask"].shape
    ((128, 128), dtype('uint8'), (128, 128))
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

__all__ = [
    "AcousticShadow",
    "BurnedInAnnotations",
    "DynamicRange",
    "ScanArea",
    "SpeckleNoise",
    "TGCRamp",
    "basic_augmentation",
    "domain_randomisation",
    "reseed",
    "scanner_randomisation",
]


def _grey(img: np.ndarray) -> tuple[np.ndarray, bool]:
    """The 2-D view of an ``(H, W)`` or ``(H, W, 1)`` image, and whether it had the channel axis."""
    if img.ndim == 3:
        return img[..., 0], True
    return img, False


def _back(img: np.ndarray, had_channel: bool) -> np.ndarray:
    return img[..., None] if had_channel else img


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class DynamicRange(A.ImageOnlyTransform):
    """Re-display the frame at another dynamic range of the log compression.

    Grey levels are read as decibels over ``assumed_db`` across the 0-255 scale and shown again
    over ``new_db`` decibels (drawn from ``db_range``), about the frame's mean level (the display
    gain a sonographer sets keeps tissue mid-grey): a smaller range gives harsher, more contrasted
    frames, a larger one flatter, greyer frames.
    """

    def __init__(self, db_range: tuple[float, float] = (35.0, 75.0), assumed_db: float = 50.0, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.db_range, self.assumed_db = tuple(db_range), float(assumed_db)

    def get_params(self) -> dict[str, Any]:
        return {"new_db": float(self.random_generator.uniform(*self.db_range))}

    def apply(self, img: np.ndarray, new_db: float = 50.0, **params: Any) -> np.ndarray:
        g, ch = _grey(img)
        x = g.astype(np.float32)
        centre = float(x.mean())
        return _back(_to_uint8(centre + (x - centre) * (self.assumed_db / new_db)), ch)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("db_range", "assumed_db")


class TGCRamp(A.ImageOnlyTransform):
    """A depth-dependent gain error: a smooth random curve of ±``max_db`` over the depth.

    ``knots`` gains are drawn uniformly in ``[-max_db, max_db]`` at equally spaced depths and
    interpolated linearly, then smoothed; the frame's grey levels move by ``gain_db / display_db``
    of the full scale (a log-compressed display adds gain in decibels).
    """

    def __init__(self, max_db: float = 6.0, knots: int = 4, display_db: float = 50.0, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.max_db, self.knots, self.display_db = float(max_db), int(knots), float(display_db)

    def get_params(self) -> dict[str, Any]:
        return {"gains": self.random_generator.uniform(-self.max_db, self.max_db, self.knots)}

    def apply(self, img: np.ndarray, gains: np.ndarray | None = None, **params: Any) -> np.ndarray:
        g, ch = _grey(img)
        h = g.shape[0]
        gains = np.zeros(self.knots) if gains is None else gains
        curve = np.interp(np.arange(h), np.linspace(0, h - 1, len(gains)), gains)
        offset = (255.0 * curve / self.display_db).astype(np.float32)[:, None]
        return _back(_to_uint8(g.astype(np.float32) + offset), ch)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_db", "knots", "display_db")


class SpeckleNoise(A.ImageOnlyTransform):
    """Multiplicative speckle-like noise of random grain size.

    A Gaussian field is smoothed with a Gaussian of ``grain`` pixels (drawn from ``grain_range``),
    rescaled to unit variance and applied as ``v * (1 + sigma * n)`` with ``sigma`` drawn from
    ``sigma_range``: coarse grain stands for a lower frequency or wider beam than the frame's own.
    """

    def __init__(
        self,
        sigma_range: tuple[float, float] = (0.1, 0.3),
        grain_range: tuple[float, float] = (0.5, 3.0),
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        self.sigma_range, self.grain_range = tuple(sigma_range), tuple(grain_range)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        rng = self.random_generator
        grain = float(rng.uniform(*self.grain_range))
        n = rng.standard_normal((h, w)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), grain)
        n /= max(float(n.std()), 1e-6)
        return {"noise": n, "sigma": float(rng.uniform(*self.sigma_range))}

    def apply(self, img: np.ndarray, noise: np.ndarray | None = None, sigma: float = 0.0, **params: Any) -> np.ndarray:
        g, ch = _grey(img)
        if noise is None:
            return img
        return _back(_to_uint8(g.astype(np.float32) * (1.0 + sigma * noise)), ch)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma_range", "grain_range")


class AcousticShadow(A.ImageOnlyTransform):
    """A posterior acoustic shadow: a soft-edged vertical band darkened below a random depth.

    The band is ``width`` of the frame wide (drawn from ``width_range``), starts at a random depth
    in the upper two thirds and keeps ``keep`` of the brightness (drawn from ``keep_range``).
    """

    def __init__(
        self,
        width_range: tuple[float, float] = (0.05, 0.25),
        keep_range: tuple[float, float] = (0.25, 0.8),
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        self.width_range, self.keep_range = tuple(width_range), tuple(keep_range)

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator
        return {
            "centre": float(rng.uniform(0.1, 0.9)),
            "width": float(rng.uniform(*self.width_range)),
            "start": float(rng.uniform(0.1, 0.66)),
            "keep": float(rng.uniform(*self.keep_range)),
        }

    def apply(
        self,
        img: np.ndarray,
        centre: float = 0.5,
        width: float = 0.1,
        start: float = 0.5,
        keep: float = 1.0,
        **params: Any,
    ) -> np.ndarray:
        g, ch = _grey(img)
        h, w = g.shape
        x = (np.arange(w) / max(w - 1, 1) - centre) / (width / 2)
        across = np.clip(1.5 - np.abs(x), 0.0, 1.0)  # flat core, soft edges
        y = np.arange(h) / max(h - 1, 1)
        down = np.clip((y - start) / 0.05, 0.0, 1.0)  # sets in over 5% of the depth
        factor = 1.0 - (1.0 - keep) * down[:, None] * across[None, :]
        return _back(_to_uint8(g.astype(np.float32) * factor.astype(np.float32)), ch)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("width_range", "keep_range")


_WORDS = ("BREAST", "RT", "LT", "12:00", "3 CM FN", "L12-5", "GAIN 54", "DR 60", "TRANS", "RADIAL", "1", "2", "D 1.2cm")


class BurnedInAnnotations(A.ImageOnlyTransform):
    """Calipers (``+`` / ``x`` markers), dotted measurement lines and text burned into the frame.

    BUS-BRA and most exported clinical frames carry them, often on the lesion border; the mask is
    left unchanged, so the network learns to look through them.
    """

    def __init__(self, max_calipers: int = 4, max_texts: int = 3, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.max_calipers, self.max_texts = int(max_calipers), int(max_texts)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        rng = self.random_generator
        marks = []
        for _ in range(int(rng.integers(0, self.max_calipers + 1))):
            marks.append(
                (int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(0, 2)), int(rng.integers(3, 8)))
            )
        line = None
        if len(marks) >= 2 and rng.random() < 0.6:
            line = (marks[0][:2], marks[1][:2])
        texts = []
        for _ in range(int(rng.integers(0, self.max_texts + 1))):
            word = _WORDS[int(rng.integers(len(_WORDS)))]
            texts.append(
                (word, int(rng.integers(0, max(1, w - 40))), int(rng.integers(10, h)), float(rng.uniform(0.25, 0.5)))
            )
        return {"marks": marks, "line": line, "texts": texts, "level": int(rng.integers(180, 256))}

    def apply(
        self,
        img: np.ndarray,
        marks: list[tuple[int, int, int, int]] | None = None,
        line: tuple[tuple[int, int], tuple[int, int]] | None = None,
        texts: list[tuple[str, int, int, float]] | None = None,
        level: int = 255,
        **params: Any,
    ) -> np.ndarray:
        g, ch = _grey(img)
        out = np.ascontiguousarray(g).copy()
        for x, y, kind, size in marks or []:
            marker = cv2.MARKER_CROSS if kind == 0 else cv2.MARKER_TILTED_CROSS
            cv2.drawMarker(out, (x, y), int(level), markerType=marker, markerSize=2 * size, thickness=1)
        if line is not None:
            (x0, y0), (x1, y1) = line
            n = max(2, int(np.hypot(x1 - x0, y1 - y0) / 4))
            for t in np.linspace(0, 1, n)[::2]:
                cv2.circle(out, (round(x0 + t * (x1 - x0)), round(y0 + t * (y1 - y0))), 0, int(level), -1)
        for word, x, y, scale in texts or []:
            cv2.putText(out, word, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, int(level), 1, cv2.LINE_AA)
        return _back(out, ch)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_calipers", "max_texts")


class ScanArea(A.DualTransform):
    """Black outside a trapezoid (linear array with steering) or sector scan area.

    The mask is cleared outside the area too: no lesion can be seen there.
    """

    def __init__(self, max_inset: float = 0.25, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.max_inset = float(max_inset)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        rng = self.random_generator
        top_inset = float(rng.uniform(0.0, self.max_inset))
        bottom_inset = float(rng.uniform(0.0, self.max_inset / 3))
        top = int(rng.integers(0, max(1, h // 10)))
        poly = np.array(
            [
                [w * top_inset, top],
                [w * (1 - top_inset), top],
                [w * (1 - bottom_inset), h - 1],
                [w * bottom_inset, h - 1],
            ],
            np.int32,
        )
        area = np.zeros((h, w), np.uint8)
        cv2.fillPoly(area, [poly], 1)
        return {"area": area}

    def apply(self, img: np.ndarray, area: np.ndarray | None = None, **params: Any) -> np.ndarray:
        if area is None:
            return img
        g, ch = _grey(img)
        return _back(g * area.astype(g.dtype), ch)

    def apply_to_mask(self, mask: np.ndarray, area: np.ndarray | None = None, **params: Any) -> np.ndarray:
        if area is None:
            return mask
        g, ch = _grey(mask)
        return _back(g * area.astype(g.dtype), ch)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_inset",)


def reseed(pipeline: A.BaseCompose, seed: int | list[int]) -> None:
    """Seed every transform of ``pipeline`` (recursively) with its own stream derived from ``seed``.

    albumentations' ``Compose.set_random_seed`` (2.0.8) gives every child transform the *same*
    seed, so their "apply?" draws are identical: with probabilities 0.2-0.6, a third of the
    samples got no augmentation at all and the rest got nested sets. Independent streams
    (``SeedSequence([*seed, k])`` for the k-th transform) give each transform its own odds.

    Example:
        >>> import numpy as np
        >>> aug = domain_randomisation(32); img = np.full((32, 32), 90, np.uint8)
        >>> unchanged = 0
        >>> for s in range(50):
        ...     reseed(aug, s); unchanged += bool((aug(image=img)["image"] == img).all())
        >>> unchanged < 5
        True
    """
    base = [int(v) for v in (seed if isinstance(seed, list) else [seed])]
    counter = 0

    def walk(node: A.BaseCompose) -> None:
        nonlocal counter
        for t in node.transforms:
            counter += 1
            sub = int(np.random.SeedSequence([*base, counter]).generate_state(1)[0])
            t.set_random_seed(sub)  # a Compose/OneOf seeds its children with the same value: re-walk them
            if isinstance(t, A.BaseCompose):
                walk(t)

    s0 = int(np.random.SeedSequence(base).generate_state(1)[0])
    pipeline.set_random_seed(s0)
    walk(pipeline)


def basic_augmentation() -> A.Compose:
    """The augmentation of the segmenter recipe before issue 23 (nnU-Net-like; kept for comparison)."""
    return A.Compose(
        [
            A.Affine(rotate=(-15, 15), scale=(0.85, 1.25), border_mode=cv2.BORDER_CONSTANT, p=0.5),
            A.HorizontalFlip(p=0.5),
            A.GaussNoise(std_range=(0.0, 0.1), p=0.15),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.5, 1.2), p=0.2),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.25, p=0.3),
            A.RandomGamma(gamma_limit=(70, 150), p=0.3),
            A.Downscale(scale_range=(0.5, 0.9), p=0.25),  # low-resolution simulation
        ]
    )


def domain_randomisation(size: int) -> A.Compose:
    """The scanner/site randomisation pipeline for ``size`` x ``size`` working frames (see the module text)."""
    return A.Compose(
        [
            # geometry: scale, aspect, rotation, translation; flips; crops that may cut the lesion
            A.Affine(
                scale={"x": (0.75, 1.3), "y": (0.75, 1.3)},
                rotate=(-10, 10),
                translate_percent=(-0.08, 0.08),
                border_mode=cv2.BORDER_CONSTANT,
                p=0.6,
            ),
            A.HorizontalFlip(p=0.5),
            A.RandomResizedCrop(size=(size, size), scale=(0.45, 1.0), ratio=(0.75, 1.33), p=0.25),
            # resolution and speckle
            A.OneOf(
                [
                    A.AdvancedBlur(
                        blur_limit=(3, 9), sigma_x_limit=(0.3, 2.5), sigma_y_limit=(0.3, 1.2), rotate_limit=(-20, 20)
                    ),
                    A.Downscale(scale_range=(0.35, 0.85)),
                ],
                p=0.4,
            ),
            SpeckleNoise(p=0.3),
            A.GaussNoise(std_range=(0.0, 0.08), p=0.15),
            # intensity: display and gain chain
            DynamicRange(p=0.35),
            TGCRamp(p=0.35),
            A.RandomGamma(gamma_limit=(70, 150), p=0.4),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.3, p=0.5),
            # artefacts
            AcousticShadow(p=0.2),
            BurnedInAnnotations(p=0.35),
            ScanArea(p=0.2),
            A.ImageCompression(quality_range=(25, 90), p=0.3),
        ]
    )


def scanner_randomisation() -> A.Compose:
    """The basic recipe's geometry with milder scanner-appearance randomisation (no zoom crops, no aspect change).

    The full :func:`domain_randomisation` lowered the leave-device-out Dice of a 10-epoch CPU
    schedule (issue 23's ablations); this variant keeps :func:`basic_augmentation` and adds each
    appearance transform with a small probability, so most samples stay close to the data.
    """
    return A.Compose(
        [
            *basic_augmentation().transforms,
            A.AdvancedBlur(
                blur_limit=(3, 7), sigma_x_limit=(0.3, 2.0), sigma_y_limit=(0.3, 1.0), rotate_limit=(-20, 20), p=0.15
            ),
            SpeckleNoise(sigma_range=(0.05, 0.2), p=0.15),
            DynamicRange(db_range=(40.0, 65.0), p=0.2),
            TGCRamp(max_db=4.0, p=0.2),
            AcousticShadow(p=0.1),
            BurnedInAnnotations(p=0.2),
            A.ImageCompression(quality_range=(40, 90), p=0.15),
        ]
    )
