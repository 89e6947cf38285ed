"""The ``usher2`` command line: a thin shell over the library.

Command names and arguments are a public contract (see DESIGN.md): add options, never rename.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperCommand

from usher2 import __version__
from usher2.io.errors import Failure, InputError
from usher2.tracking import DEFAULT_TRACKING_URI

if TYPE_CHECKING:
    import pandas as pd

    from usher2.enhance.apply import EnhanceResult
    from usher2.simulate import SimulationConfig

app = typer.Typer(
    name="usher2",
    help="HER2 status from breast-ultrasound frames: simulate, import, enhance, segment, extract, fit, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
import_app = typer.Typer(help="Build a manifest from a public dataset's folder layout.", no_args_is_help=True)
app.add_typer(import_app, name="import")
mri_app = typer.Typer(
    help="The 3D MRI adapter: the four MRI study recipes on the same fusion core.", no_args_is_help=True
)
app.add_typer(mri_app, name="mri")

console = Console()
err_console = Console(stderr=True)

DEFAULT_DEMO_DIR = Path("usher2-demo")


def _version(value: bool) -> None:
    if value:
        console.print(f"usher2 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """usher2: HER2 status from breast-ultrasound frames."""


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn bad input into one clear line and exit code 2 instead of a traceback.

    ValueError is included: the library's config dataclasses raise it for out-of-range settings,
    with a message that names the field, what was expected and what arrived.
    """
    try:
        yield
    except (InputError, ValueError, FileNotFoundError, FileExistsError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from exc


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar, handed to the library as a ``progress(done, total)`` callback."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _print_oracle_aucs(manifest: pd.DataFrame, config: SimulationConfig, title: str) -> None:
    """Oracle AUCs of this cohort next to the label model's population values.

    A small cohort's oracle AUC is itself an estimate; the population column (a labels-only
    draw of 400,000 patients, under a second) is what the label model is calibrated to.
    """
    from usher2.simulate import oracle_aucs, simulate_labels

    population = oracle_aucs(simulate_labels(400_000, seed=20_251_123, model=config.label_model), config)
    classes = sorted(int(v) for v in manifest["label"].dropna().unique())
    cohort = oracle_aucs(manifest, config) if len(classes) == 2 else None
    table = Table(title=title)
    table.add_column("subset")
    table.add_column(f"this cohort (n={len(manifest)})", justify="right")
    table.add_column("population", justify="right")
    names = {"clinical": "clinical only", "image": "image traits only", "all": "all (true_prob)"}
    for key in ("clinical", "image", "all"):
        table.add_row(names[key], "n/a" if cohort is None else f"{cohort[key]:.3f}", f"{population[key]:.3f}")
    console.print(table)
    if cohort is None:
        console.print(
            f"[yellow]this cohort's oracle AUCs are undefined: every one of its {len(manifest)} cases "
            f"has label {classes}[/]"
        )


def _rate(manifest: pd.DataFrame, seconds: float) -> str:
    """'N cases rendered in T s (R cases/s)', saying how many a resumed run reused from disk."""
    rendered = int(manifest.attrs.get("rendered", len(manifest)))
    reused = int(manifest.attrs.get("reused", 0))
    text = f"{rendered} cases rendered in {seconds:.1f} s"
    if rendered:
        text += f" ({rendered / seconds:.1f} cases/s)"
    if reused:
        text += f", {reused} reused from disk"
    return text


#: --device of the commands that run networks
FramesArgument = Annotated[
    Path,
    typer.Argument(
        metavar="INPUT",
        help="An image, DICOM or video file; a directory (searched recursively); or a manifest (.csv/.parquet).",
        show_default=False,
    ),
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, cuda:1... Default: CUDA when available.")
]
RadiomicsBackendOption = Annotated[
    str | None,
    typer.Option(
        "--radiomics-backend",
        help="pyradiomics (the reference) or torch (the same columns, batched; equal to float tolerance). "
        "Default: pyradiomics for extract and fit, torch for score.",
    ),
]


@app.command()
def simulate(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of patients (frames = n x frames-per-patient).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (images/, masks/, clean/, manifest.csv).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same cohort.")] = 0,
    size: Annotated[int, typer.Option("--size", min=32, help="Frame height and width in pixels.")] = 256,
    frames_per_patient: Annotated[
        int, typer.Option("--frames-per-patient", min=1, help="Frames (views) per patient.")
    ] = 1,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes.")] = None,
) -> None:
    """Simulate a seeded synthetic breast-ultrasound cohort with known HER2 truth."""
    from usher2.simulate import SimulationConfig, simulate_cohort

    with _user_errors():
        config = SimulationConfig(image_size=(size, size), frames_per_patient=frames_per_patient)
        t0 = time.perf_counter()
        with _progress("simulating") as progress:
            manifest = simulate_cohort(n, seed, out, config=config, workers=workers, progress=progress)
        dt = time.perf_counter() - t0
    _print_oracle_aucs(manifest, config, f"{len(manifest)} cases, seed {seed}")
    console.print(f"{_rate(manifest, dt)}, prevalence {manifest['label'].mean():.3f}")
    console.print(f"manifest: {out / 'manifest.csv'}")


@import_app.command("bus-bra")
def import_bus_bra(
    root: Annotated[Path, typer.Argument(help="BUS-BRA folder (Images/, Masks/, bus_data.csv, 5-fold-cv.csv).")],
    out: Annotated[Path, typer.Option("--out", help="Manifest to write (.csv or .parquet).")],
) -> None:
    """Build a manifest from BUS-BRA: label = malignant, patient_id = Case, official 5-fold partition."""
    from usher2.io.importers import import_bus_bra as run

    with _user_errors():
        df = run(root, out)
    console.print(
        f"{len(df)} frames, {df['patient_id'].nunique()} patients, {int(df['label'].sum())} malignant -> {out}"
    )


@import_app.command("busi")
def import_busi(
    root: Annotated[Path, typer.Argument(help="BUSI folder (benign/, malignant/, normal/).")],
    out: Annotated[Path, typer.Option("--out", help="Manifest to write (.csv or .parquet).")],
) -> None:
    """Build a manifest from BUSI: class folders, split masks merged, 'normal' frames unlabelled."""
    from usher2.io.importers import import_busi as run

    with _user_errors():
        df = run(root, out)
    labelled = df["label"].notna()
    console.print(
        f"{len(df)} frames ({int(labelled.sum())} labelled, {int(df.loc[labelled, 'label'].sum())} malignant) -> {out}"
    )


class _ModelListCommand(TyperCommand):
    """Fills in ``--model``'s list of names only when help is shown.

    Importing the networks loads torch (about a second), which every other command, and
    ``usher2 --version``, would pay for if the list were built with the command. Subclasses
    name the stage and how to get its names and default.
    """

    stage = ""

    @staticmethod
    def choices() -> tuple[list[str], str]:
        raise NotImplementedError

    def format_help(self, ctx: Any, formatter: Any) -> None:
        names, default = self.choices()
        for param in self.params:
            if param.name == "model":
                param.help = f"{self.stage}, one of: {', '.join(names)}. Default: {default}."
        super().format_help(ctx, formatter)


class _EnhanceCommand(_ModelListCommand):
    stage = "Enhancer"

    @staticmethod
    def choices() -> tuple[list[str], str]:
        from usher2.enhance import available_enhancers
        from usher2.enhance.apply import DEFAULT_ENHANCER

        return available_enhancers(), DEFAULT_ENHANCER


class _SegmentCommand(_ModelListCommand):
    stage = "Segmenter"

    @staticmethod
    def choices() -> tuple[list[str], str]:
        from usher2.segment import available_segmenters
        from usher2.segment.apply import DEFAULT_SEGMENTER

        return available_segmenters(), DEFAULT_SEGMENTER


def _print_failures(failures: list[Any], n_inputs: int) -> None:
    """A table of the failures (also in failures.csv)."""
    if not failures:
        return
    table = Table(title=f"{len(failures)} of {n_inputs} inputs failed")
    table.add_column("case", no_wrap=True)
    table.add_column("error", overflow="fold")
    for failure in failures:
        table.add_row(failure.case, failure.error)
    console.print(table)


def _exit_on_failures(failures: list[Any], n_inputs: int, out: Path, *, listed_in: Path | None = None) -> None:
    """Exit code 1 when anything failed, naming the failures file (``out/failures.csv`` unless ``listed_in``)."""
    from usher2.io.runner import FAILURES_FILE

    if failures:
        err_console.print(
            f"[bold red]{len(failures)} of {n_inputs} inputs failed[/]; see {listed_in or out / FAILURES_FILE}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)


def _timed(label: str, run: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``run(*args, progress=..., **kwargs)`` under a progress bar and the user-error handler, and its seconds."""
    with _user_errors():
        t0 = time.perf_counter()
        with _progress(label) as progress:
            result = run(*args, progress=progress, **kwargs)
        return result, time.perf_counter() - t0


def _print_enhance_result(result: EnhanceResult, seconds: float) -> None:
    """One summary line, then a table of the failures (also in failures.csv)."""
    text = f"{len(result.enhanced)} inputs enhanced ({len(result.written)} PNGs) in {seconds:.1f} s"
    if result.skipped:
        text += f", {len(result.skipped)} skipped (already enhanced with these settings)"
    console.print(f"{text} -> {result.out}", highlight=False)
    _print_failures(result.failures, result.n_inputs)


@app.command(cls=_EnhanceCommand)
def enhance(
    input_path: FramesArgument,
    out: Annotated[Path, typer.Option("--out", help="Output folder: 8-bit PNGs under the inputs' relative names.")],
    model: Annotated[
        str | None, typer.Option("--model", help="Enhancer name (usher2 enhance --help lists them).")
    ] = None,
    strength: Annotated[
        float,
        typer.Option(
            "--strength", min=0.0, max=1.0, help="Speckle-preserving blend: 0 keeps the input, 1 the full filter."
        ),
    ] = 1.0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Frames of equal shape enhanced together.")
    ] = 8,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Re-enhance every input, also into a folder made with other settings."),
    ] = False,
) -> None:
    """Enhance frames into 8-bit PNGs under the same relative names (multi-frame files: a folder of frames).

    A re-run into the same --out skips inputs already done. Exit code 0: all enhanced; 1: some failed; 2: bad input.
    """
    from usher2.enhance.apply import DEFAULT_ENHANCER, enhance_paths

    result, dt = _timed(
        "enhancing",
        enhance_paths,
        input_path,
        out,
        model=model or DEFAULT_ENHANCER,
        strength=strength,
        batch_size=batch_size,
        overwrite=overwrite,
    )
    _print_enhance_result(result, dt)
    _exit_on_failures(result.failures, result.n_inputs, out)


@app.command(cls=_SegmentCommand)
def segment(
    input_path: FramesArgument,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output folder: 0/255 PNG masks under the inputs' relative names, segmentation.csv."
        ),
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Segmenter name (usher2 segment --help lists them).")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="A safetensors weights file instead of the shipped one.")
    ] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Flip test-time augmentation (twice the compute).")] = False,
    device: DeviceOption = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Frames of equal shape segmented together.")
    ] = 8,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Re-segment every input, also into a folder made with other settings."),
    ] = False,
) -> None:
    """Segment the lesion: one 0/255 PNG mask per frame and DIR/segmentation.csv (area, uncertainty, no-lesion flag).

    A re-run into the same --out skips inputs already done.
    Exit code 0: all segmented (a frame with no lesion found is a result); 1: some inputs failed; 2: bad input.
    """
    from usher2.segment.apply import CSV_FILE, DEFAULT_SEGMENTER, segment_paths

    result, dt = _timed(
        "segmenting",
        segment_paths,
        input_path,
        out,
        model=model or DEFAULT_SEGMENTER,
        weights=weights,
        tta=tta,
        device=device,
        batch_size=batch_size,
        overwrite=overwrite,
    )
    text = f"{len(result.segmented)} inputs segmented ({len(result.written)} masks) in {dt:.1f} s"
    if result.skipped:
        text += f", {len(result.skipped)} skipped (already segmented with these settings)"
    console.print(f"{text}; no lesion found in {result.n_no_lesion} of {len(result.rows)} frames", highlight=False)
    console.print(f"masks -> {result.out}, table -> {result.out / CSV_FILE}", highlight=False)
    _print_failures(result.failures, result.n_inputs)
    _exit_on_failures(result.failures, result.n_inputs, out)


@app.command()
def extract(
    manifest: Annotated[
        Path, typer.Argument(metavar="MANIFEST", help="Cohort manifest (.csv/.parquet).", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Feature table to write (.parquet).")],
    params: Annotated[
        Path | None, typer.Option("--params", help="pyradiomics parameter YAML (default: usher2's, see README).")
    ] = None,
    backbone: Annotated[
        list[str] | None,
        typer.Option(
            "--backbone",
            help="Deep backbone, repeatable: usresnet10t (shipped, default), NAME=PATH (timm name + local weights), "
            "NAME=random (untrained, with a warning), or none.",
        ),
    ] = None,
    radiomics: Annotated[bool, typer.Option("--radiomics/--no-radiomics", help="Radiomics features.")] = True,
    lexicon: Annotated[
        bool, typer.Option("--lexicon/--no-lexicon", help="With radiomics: the BI-RADS lexicon descriptors.")
    ] = True,
    masks: Annotated[str, typer.Option("--masks", help="given (the manifest's) or predicted (the segmenter's).")] = (
        "given"
    ),
    enhancer: Annotated[str, typer.Option("--enhancer", help="Enhancer name, or none.")] = "none",
    overlays: Annotated[
        str, typer.Option("--overlays", help="keep, or inpaint burned-in text/calipers before extraction.")
    ] = "keep",
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Start a local Dask cluster with N worker processes.")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Use an existing Dask cluster, e.g. tcp://10.0.0.5:8786.")
    ] = None,
    perturb: Annotated[
        bool, typer.Option("--perturb", help="Also write FEATURES.perturbations.parquet (for the ICC filter).")
    ] = False,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Cases per unit of work.")] = 16,
    device: DeviceOption = None,
    radiomics_backend: RadiomicsBackendOption = None,
) -> None:
    """Extract the named feature table (radiomics + deep features) of a cohort.

    A re-run with the same settings computes only the cases not done yet (e.g. after a kill).
    Exit code 0: every case has a row; 1: some cases failed (FEATURES.failures.csv); 2: bad input.
    """
    from usher2.features.deep import DEFAULT_BACKBONE
    from usher2.pipeline import Pipeline, PipelineConfig

    backbones = tuple(b for b in (backbone or [DEFAULT_BACKBONE]) if b.lower() != "none")
    with _user_errors():
        cfg = PipelineConfig(  # the same record as usher2 fit and the pipeline YAML
            radiomics=(_load_params(params) or True) if radiomics else False,
            lexicon=lexicon,
            backbones=backbones,
            masks=masks,
            enhancer=enhancer,
            overlays=overlays,
            perturb=perturb,
            chunk_size=chunk_size,
            device=device,
            workers=workers,
            scheduler=scheduler,
            radiomics_backend=radiomics_backend,
        )
        t0 = time.perf_counter()
        pipe = Pipeline(cfg, progress=lambda _name: _progress("extracting"), log=console.print)
        result = pipe.extract(manifest, out, fit=perturb)[2]  # fit: with the perturbation table of --perturb
        dt = time.perf_counter() - t0
    n_feat = len([c for c in result.table.columns if c.startswith(("radiomics_", "deep_"))])
    console.print(
        f"{len(result.table)} of {result.n_cases} cases -> {n_feat} features each; computed {result.computed} "
        f"in {dt:.1f} s, {result.n_cases - result.computed} reused -> {result.paths['table']}"
    )
    if result.perturbations is not None:
        console.print(f"perturbations: {len(result.perturbations)} rows -> {result.paths['perturbations']}")
    whole = result.failures["stage"].isin(("features", "no_lesion"))  # a case without a row
    bad = result.failures[~whole]
    if len(bad):
        console.print(f"[yellow]{len(bad)} perturbations could not be computed[/] (listed in the failures file)")
    rows = result.failures[whole]
    failed = [Failure(str(r.case_id), str(r.error)) for r in rows.itertuples()]
    _print_failures(failed, result.n_cases)
    _exit_on_failures(failed, result.n_cases, out, listed_in=result.paths["failures"])


#: the environment variable of usher2.fusion.bundle.KEY_ENV (not imported here: keeps --help fast)
_KEY_ENV = "USHER2_BUNDLE_KEY_FILE"
_VERIFY_HELP = (
    f"Key file: refuse a bundle without a signature.json made with this key (usher2 fit --sign). Default: {_KEY_ENV}."
)


_TRACK_HELP = (
    "MLflow store that logs this run (parameters, per-epoch or per-fold metrics, config and model card as "
    "artefacts): a folder, file:DIR or http://HOST:PORT; off disables it. Runs go under the current directory "
    "by default."
)
TrackOption = Annotated[str, typer.Option("--track", envvar="MLFLOW_TRACKING_URI", help=_TRACK_HELP)]
NoTrackOption = Annotated[bool, typer.Option("--no-track", help="Do not log this run to MLflow (same as --track off).")]


def _tracking(track: str, no_track: bool) -> str | None:
    """The resolved --track store, None with --no-track; announced so users know where runs go."""
    from usher2.tracking import resolve_tracking_uri

    uri = None if no_track else resolve_tracking_uri(track)
    if uri is not None:
        console.print(f"MLflow tracking: {uri} (--no-track to turn off)", highlight=False)
    return uri


def _bundle_key(path: Path | None) -> bytes | None:
    """The key in a --sign/--verify key file, or None without one."""
    from usher2.fusion.bundle import read_key

    return None if path is None else read_key(path)


def _load_params(path: Path | None) -> dict[str, Any] | None:
    from usher2.features.radiomics import load_params

    return None if path is None else load_params(path)


# the longer options of usher2 fit
FitFeaturesOption = Annotated[
    Path | None,
    typer.Option("--features", help="Feature table from usher2 extract; without it extraction runs first."),
]

FitClinicalOption = Annotated[
    list[str] | None, typer.Option("--clinical", help="Clinical column, repeatable (numeric).")
]

FitModelOption = Annotated[
    str, typer.Option("--model", help="clinical, radiomics, deep (deep:BACKBONE), dlr or combined.")
]

FitClassifierOption = Annotated[
    str, typer.Option("--classifier", help="lr, rf, xgboost, lightgbm, svm or mlp (early fusion).")
]

FitSequenceOption = Annotated[
    list[str] | None,
    typer.Option("--sequence", help="MRI: use only <SEQUENCE>_radiomics_/_deep_ columns; repeatable."),
]

FitFusionOption = Annotated[
    str, typer.Option("--fusion", help="early (concatenated features) or late (stacked scores).")
]

FitTestIdsOption = Annotated[
    Path | None, typer.Option("--test-ids", help="File of case ids (one per line): a fixed test split.")
]

FitFoldsColumnOption = Annotated[
    str | None, typer.Option("--folds-column", help="Manifest column of predefined outer folds (e.g. fold).")
]

ScoringMasksOption = Annotated[
    str,
    typer.Option(
        "--scoring-masks",
        help="The masks the model will be scored on: predicted (usher2 score's default) or given. predicted: "
        "when fit extracts, it also redraws every lesion contour at a segmenter's error scale (contour-1); the "
        "ICC filter then keeps only features robust to that, and the redrawn frames are trained on too "
        "(--augment 1), the best of the variants measured on held-out devices (issue 23, see the README).",
    ),
]

AugmentOption = Annotated[
    int | None,
    typer.Option(
        "--augment",
        min=0,
        help="Train also on N copies of every training frame whose lesion contour is redrawn at a segmenter's "
        "error scale (contour-1..N rows of FEATURES.perturbations.parquet; extracted when fit extracts). "
        "Copies stay with their patient in every fold and are never evaluated. Default: 1 with "
        "--scoring-masks predicted when the table has contour-1 rows, else 0.",
    ),
]

IccOption = Annotated[
    bool,
    typer.Option("--icc/--no-icc", help="ICC filter over the perturbation table beside the features, if any."),
]

IccPerturbationOption = Annotated[
    list[str] | None,
    typer.Option(
        "--icc-perturbation",
        help="Compute the ICC over only this perturbation (+ original), repeatable; e.g. mask_predicted: "
        "features reproducible between given and predicted masks. Default: every one in the table.",
    ),
]

TrainingMasksOption = Annotated[
    str | None,
    typer.Option(
        "--training-masks",
        help="What the training masks are, for the bundle's record: given, predicted or out-of-fold (a "
        "segmenter's predictions for patients it did not train on). Default: the extraction's mask source.",
    ),
]

ConfidenceProbsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--confidence-probs",
        help="Folder of a segmenter's out-of-fold probability maps (<case_id>.png), repeatable: calibrate the "
        "low_segmentation_confidence threshold on them against the manifest's masks (the uncertainty that flags "
        "80% of the masks at Dice < 0.5) and store it in the bundle.",
    ),
]


@app.command()
def fit(
    manifest: Annotated[
        Path, typer.Argument(metavar="MANIFEST", help="Manifest with labels (.csv/.parquet).", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    features: FitFeaturesOption = None,
    label: Annotated[str, typer.Option("--label", help="Label column (0/1).")] = "label",
    clinical: FitClinicalOption = None,
    model: FitModelOption = "combined",
    classifier: FitClassifierOption = "lr",
    sequence: FitSequenceOption = None,
    fusion: FitFusionOption = "early",
    outer_folds: Annotated[int, typer.Option("--outer-folds", min=2, help="Outer CV folds (by patient).")] = 5,
    inner_folds: Annotated[int, typer.Option("--inner-folds", min=2, help="Inner CV folds (tuning).")] = 3,
    calibration: Annotated[str, typer.Option("--calibration", help="sigmoid, isotonic or none.")] = "sigmoid",
    test_ids: FitTestIdsOption = None,
    folds_column: FitFoldsColumnOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every split.")] = 0,
    perturb: Annotated[
        bool, typer.Option("--perturb", help="When extracting: also the perturbation table (ICC filter).")
    ] = False,
    scoring_masks: ScoringMasksOption = "predicted",
    augment: AugmentOption = None,
    icc: IccOption = True,
    icc_perturbation: IccPerturbationOption = None,
    training_masks: TrainingMasksOption = None,
    confidence_probs: ConfidenceProbsOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle folder.")] = False,
    radiomics_backend: RadiomicsBackendOption = None,
    sign: Annotated[
        Path | None,
        typer.Option(
            "--sign",
            envvar=_KEY_ENV,
            help="Key file: also write signature.json (HMAC-SHA256 of hashes.json), checked by --verify. "
            f"Default: {_KEY_ENV}.",
        ),
    ] = None,
    track: TrackOption = DEFAULT_TRACKING_URI,
    no_track: NoTrackOption = False,
) -> None:
    """Nested-CV estimate and final model of one family; writes a bundle that loads without executing code.

    Prints the out-of-fold AUC with its DeLong 95% CI. Exit code 2 on bad input.
    """
    from usher2.pipeline import Pipeline, PipelineConfig

    with _user_errors():
        key = _bundle_key(sign)  # before the fit, so a bad key file fails now and not after it
        uri = _tracking(track, no_track)
        cfg = PipelineConfig(
            models=(model,),
            classifier=classifier,
            fusion=fusion,
            clinical=tuple(clinical or ()) if model in ("clinical", "combined") else (),
            label=label,
            outer_folds=outer_folds,
            inner_folds=inner_folds,
            calibration=calibration,
            seed=seed,
            perturb=perturb,
            scoring_masks=scoring_masks,
            augment=augment,
            icc=icc,
            icc_perturbations=tuple(icc_perturbation or ()),
            radiomics_backend=radiomics_backend,
        )
        ids = None
        if test_ids is not None:
            if not test_ids.is_file():
                raise InputError(test_ids, "a file of case ids, one per line", "no such file")
            ids = [s.strip() for s in test_ids.read_text(encoding="utf-8").splitlines() if s.strip()]
        pipe = Pipeline(cfg, progress=_progress, log=lambda msg: console.print(msg, highlight=False))
        res = pipe.fit_model(
            manifest,
            out,
            model,
            features=features,
            overwrite=overwrite,
            clinical=clinical or [],
            sequences=sequence,
            test_ids=ids,
            folds_column=folds_column,
            training_masks=training_masks,
            confidence_probs=confidence_probs,
            sign_key=key,
            track=uri,
        )
    a = res.cv.auc
    n_folds = res.cv.oof["fold"].nunique()
    what = "fixed test split" if ids else f"{n_folds}-fold nested CV" + (f" ({folds_column})" if folds_column else "")
    console.print(
        f"{model} ({fusion}, {classifier}): {what} AUC {a['auc']:.3f} (95% CI {a['ci_low']:.3f}-{a['ci_high']:.3f}), "
        f"n={res.n_used}" + (f", {res.n_unlabelled} unlabelled cases not used" if res.n_unlabelled else "")
    )
    console.print(f"{len(res.selected)} features in the final model; threshold {res.threshold:.3f} -> {res.bundle}")
    if key is not None:
        console.print(f"signed: {res.bundle / 'signature.json'}")


@app.command()
def score(
    ctx: typer.Context,
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="An image, DICOM (multi-frame too) or video file, a directory, or a manifest.",
            show_default=False,
        ),
    ],
    bundle: Annotated[Path, typer.Option("--bundle", help="Model bundle folder from usher2 fit.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output folder (per-frame CSV/JSON, overlays, contact sheets, report.html); a path ending in "
            ".csv writes one scores CSV instead (cohort scale: resumable, --workers).",
        ),
    ],
    clinical: Annotated[
        Path | None, typer.Option("--clinical", help="CSV of case_id + the bundle's clinical columns.")
    ] = None,
    masks: Annotated[
        str, typer.Option("--masks", help="predicted (segmenter) or given (a manifest's mask column; .csv only).")
    ] = "predicted",
    cam: Annotated[
        str, typer.Option("--cam", help="Heat-map method: gradcam, gradcam++, scorecam, eigencam, layercam or none.")
    ] = "gradcam",
    overlays: Annotated[bool, typer.Option("--overlays/--no-overlays", help="Write overlay PNGs.")] = True,
    stride: Annotated[int, typer.Option("--stride", min=1, help="Score every k-th frame of a sequence.")] = 1,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="At most this many frames per input.")
    ] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.html (folder output).")] = True,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Local Dask workers (.csv output).")] = None,
    verify: Annotated[Path | None, typer.Option("--verify", envvar=_KEY_ENV, help=_VERIFY_HELP)] = None,
    max_megapixels: Annotated[float | None, typer.Option("--max-megapixels", help=_MAX_MEGAPIXELS_HELP)] = None,
    segmenter_weights: Annotated[
        Path | None,
        typer.Option(
            "--segmenter-weights",
            help="Predict masks with these weights of the bundle's segmenter network (.safetensors from usher2 train "
            "segmenter) instead of its own.",
        ),
    ] = None,
    device: DeviceOption = None,
    radiomics_backend: RadiomicsBackendOption = None,
) -> None:
    """Score frames with a bundle: enhance, segment, extract, predict, explain.

    Folder output: frames.csv (one row per frame), cases.csv (one per input; for a video or multi-frame
    DICOM the mean over confident frames), scores.json, overlays/ (mask contour + Grad-CAM), sheets/
    (contact sheets), videos/ (annotated videos), failures.csv and report.html.
    Exit code 0: every input scored (no lesion found is a result); 1: some failed; 2: bad input.
    """
    from usher2.pipeline import Pipeline, PipelineConfig

    ctx.with_resource(_pixel_limit(max_megapixels))
    model: Any = bundle  # the folder, or with --verify the bundle loaded and verified once (not re-read)
    with _user_errors():
        if verify is not None:
            from usher2.fusion.bundle import load_bundle

            model = load_bundle(bundle, verify_key=_bundle_key(verify))
        cfg = PipelineConfig(  # as usher2 fit and the YAML
            scoring_masks=masks, device=device, workers=workers, radiomics_backend=radiomics_backend
        )
        pipe = Pipeline(cfg, progress=_progress, log=lambda msg: console.print(msg, highlight=False))
    if out.suffix.lower() == ".csv":
        _score_csv(pipe, input_path, model, out, clinical, segmenter_weights)
        return
    with _user_errors():
        res = pipe.score(
            input_path,
            model,
            out,
            clinical=clinical,
            cam=None if cam == "none" else cam,
            overlays=overlays,
            stride=stride,
            max_frames=max_frames,
            report=report,
            segmenter_weights=segmenter_weights,
        )
    f, c = res.frames, res.cases
    console.print(
        f"{len(c)} inputs ({int((c['kind'] == 'sequence').sum())} sequences), {len(f)} frames: "
        f"{int(f['probability'].notna().sum())} scored, {int(f['no_lesion'].sum())} with no lesion found, "
        f"{int(f['low_segmentation_confidence'].sum())} with low segmentation confidence -> {out}"
    )
    _warn_clinical(f)
    if res.report:
        console.print(f"report: {res.report}")
    failed = [Failure(str(r.case_id), str(r.error)) for r in res.failures.itertuples()]
    n_inputs = len(c) + len(failed)
    _print_failures(failed, n_inputs)
    _exit_on_failures(failed, n_inputs, out, listed_in=out / "failures.csv")


_MAX_MEGAPIXELS_HELP = (
    "Largest decoded frame in megapixels (2**20 pixels), checked from each file's header before decoding; "
    "larger files fail. Default: USHER2_MAX_MEGAPIXELS, else 64."
)


@contextmanager
def _pixel_limit(megapixels: float | None) -> Iterator[None]:
    """Set the decoded-size limit for one command, here and in the worker processes it starts.

    It goes through USHER2_MAX_MEGAPIXELS (which :func:`usher2.io.limits.default_limits` reads)
    because Dask workers are separate processes; the previous value is restored afterwards.
    """
    if megapixels is None:
        yield
        return
    import os

    from usher2.io.limits import LIMITS_ENV, PixelLimits

    with _user_errors():
        PixelLimits.from_megapixels(megapixels, where="--max-megapixels")
    before = os.environ.get(LIMITS_ENV)
    os.environ[LIMITS_ENV] = repr(float(megapixels))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LIMITS_ENV, None)
        else:
            os.environ[LIMITS_ENV] = before


def _warn_clinical(rows: Any) -> None:
    """Say how many frames had clinical values imputed or outside the training range (nothing when none)."""
    n = int(rows["clinical_missing"].fillna(False).astype(bool).sum()) if len(rows) else 0
    if n:
        console.print(
            f"[yellow]{n} frames lack clinical values the model uses[/]: imputed with the training medians "
            "(pass --clinical CLINICAL.csv)"
        )
    n = int(rows["clinical_out_of_range"].fillna(False).astype(bool).sum()) if len(rows) else 0
    if n:
        console.print(
            f"[yellow]{n} frames have clinical values outside the training range[/]: flagged "
            "clinical_out_of_range (the score extrapolates)"
        )


def _score_csv(
    pipe: Any, input_path: Path, bundle: Any, out: Path, clinical: Path | None, segmenter_weights: Path | None
) -> None:
    """``usher2 score ... --out SCORES.csv``: one scores CSV, cohort scale (resumable, Dask workers)."""
    with _user_errors():
        res = pipe.score(input_path, bundle, out, clinical=clinical, segmenter_weights=segmenter_weights)
    s = res.scores
    scored = s["probability"].notna()
    console.print(
        f"{int(scored.sum())} frames scored, {int(s['no_lesion'].sum())} with no lesion found, "
        f"{int(s['low_segmentation_confidence'].sum())} with low segmentation confidence -> {out}"
    )
    _warn_clinical(s)
    failed = [Failure(str(r.case_id), str(r.error)) for r in res.failures.itertuples()]
    n_inputs = len(s) + len(failed)
    _print_failures(failed, n_inputs)
    _exit_on_failures(failed, n_inputs, out, listed_in=res.paths["failures"])


@app.command()
def evaluate(
    scores: Annotated[
        list[Path],
        typer.Argument(
            metavar="SCORES...",
            help="usher2 score outputs (a scores CSV or an output folder), one per model.",
            show_default=False,
        ),
    ],
    manifest: Annotated[Path, typer.Option("--manifest", help="Labelled manifest (case_id, patient_id, label).")],
    out: Annotated[Path, typer.Option("--out", help="Evaluation directory to write.")],
    label: Annotated[str, typer.Option("--label", help="Label column of the manifest.")] = "label",
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write DIR/report.html.")] = True,
    cam_examples: Annotated[int, typer.Option("--cam-examples", min=0, help="Grad-CAM examples per group.")] = 3,
) -> None:
    """Evaluate saved scores against labels: AUC with DeLong CI per model, the evaluation directory, the report."""
    from usher2.pipeline import evaluate_scores

    with _user_errors():
        table = evaluate_scores(scores, manifest, out, label=label, report=report, cam_examples=cam_examples)
    t = Table(title=f"held-out AUC against {manifest.name}")
    for col in ("model", "n", "not scored", "AUC (95% CI)", "nested-CV AUC"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in table.itertuples():
        cv = "-" if r.cv_auc != r.cv_auc else f"{r.cv_auc:.3f}"
        auc = f"{r.test_auc:.3f} ({r.test_ci_low:.3f}-{r.test_ci_high:.3f})"
        t.add_row(r.model, str(r.n), str(r.n_unscored), auc, cv)
    console.print(t)
    console.print(f"-> {out}" + (f"; report: {out / 'report.html'}" if report else ""))


def _overrides(out: Path | None, export: Path | None) -> dict[str, str | None]:
    """The --out/--export options of ``usher2 train`` as config overrides (None keeps the file's)."""
    return {"out": str(out) if out else None, "export": str(export) if export else None}


def _print_enhancer(cfg: Any, result: Any) -> None:
    console.print(
        f"best epoch {result.best_epoch} of {len(result.history)}, {result.steps} steps in "
        f"{result.wall_seconds:.0f} s; validation {result.best_metrics} -> {result.weights}"
    )


def _print_segmenter(cfg: Any, result: Any) -> None:
    if result.cv:
        d = result.cv["dice"]
        console.print(
            f"{len(result.cv['folds'])}-fold cross-validated Dice {d['mean']:.4f} "
            f"(95% CI {d['ci_low']:.4f}-{d['ci_high']:.4f}); largest component only: {result.largest_component}"
        )
    if result.simulated:
        console.print(f"held-out simulated Dice {result.simulated['dice']['mean']:.4f}")
    console.print(f"{result.steps} steps, {result.wall_seconds:.0f} s -> {result.weights}")


def _print_backbone(cfg: Any, metrics: Any) -> None:
    for key in ("bus_bra_pathology", "simulated_her2"):
        if key in metrics:
            v = metrics[key]
            ci = f"95% CI {v['ci_low']:.3f}-{v['ci_high']:.3f}"
            console.print(f"held-out {key} AUC {v['auc']:.3f} ({ci}, n={v['n']})")
    console.print(f"-> {cfg.export}")


#: ``usher2 train KIND``: (module, config loader, trainer, the model's name on the progress bar, summary)
_TRAINERS: dict[str, tuple[str, str, str, Callable[[Any], str], Callable[[Any, Any], None]]] = {
    "enhancer": ("usher2.enhance.training", "load_train_config", "train_enhancer", lambda c: c.model, _print_enhancer),
    "segmenter": (
        "usher2.segment.training",
        "load_segmenter_config",
        "train_segmenter",
        lambda c: f"{c.network.arch}/{c.network.encoder}",
        _print_segmenter,
    ),
    "backbone": (
        "usher2.features.pretrain",
        "load_backbone_config",
        "train_backbone",
        lambda c: c.arch,
        _print_backbone,
    ),
}


@app.command(no_args_is_help=True)
def train(
    kind: Annotated[
        str,
        typer.Argument(
            metavar="KIND",
            help="enhancer (pix2pix or CycleGAN; a killed run resumes from its checkpoint), segmenter (cross-"
            "validated U-Net and friends; resumes where it stopped) or backbone (the ultrasound deep-feature "
            "backbone usresnet10t; resumes after its last epoch).",
            show_default=False,
        ),
    ],
    config: Annotated[Path, typer.Option("--config", help="YAML/JSON training config (see train/configs/).")],
    out: Annotated[Path | None, typer.Option("--out", help="Override the config's run folder.")] = None,
    export: Annotated[Path | None, typer.Option("--export", help="Override where the weights go.")] = None,
    track: TrackOption = DEFAULT_TRACKING_URI,
    no_track: NoTrackOption = False,
) -> None:
    """Train the enhancement, segmentation or deep-feature network from a config file."""
    import importlib

    with _user_errors():
        if kind not in _TRAINERS:
            raise InputError("KIND", f"one of {', '.join(_TRAINERS)}", repr(kind))
        module, load_name, run_name, what, summary = _TRAINERS[kind]
        mod = importlib.import_module(module)
        cfg = getattr(mod, load_name)(config, **_overrides(out, export))
        uri = _tracking(track, no_track)
        with _progress(f"training {what(cfg)}") as progress:
            command = f"usher2 train {kind} --config {config}"
            result = getattr(mod, run_name)(cfg, log=console.print, progress=progress, command=command, track=uri)
    summary(cfg, result)


DEMO_CLINICAL = ("age", "tumour_size_mm", "ln_status", "er", "pr", "grade", "ki67")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where the demo writes its cohorts, bundles and report.")] = (
        DEFAULT_DEMO_DIR
    ),
    n_train: Annotated[int, typer.Option("--n-train", min=40, help="Simulated training patients.")] = 240,
    n_test: Annotated[int, typer.Option("--n-test", min=20, help="Simulated held-out test patients.")] = 160,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (the test cohort uses seed + 1).")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Extraction worker processes.")] = 2,
    config: Annotated[
        Path | None, typer.Option("--config", help="Pipeline YAML (default: enhancer + segmenter + all models).")
    ] = None,
) -> None:
    """The main job on the embedded synthetic cohort, no data and no download needed.

    Simulate a training and a held-out cohort, enhance (shipped pix2pix), segment (shipped U-Net),
    extract radiomics + lexicon + deep features, nested-CV fit of every model family, evaluate on
    the held-out cohort, write the HTML report. A re-run reuses every finished step.
    """
    from rich.table import Table

    from usher2.pipeline import FAMILY_ORACLE, Pipeline, PipelineConfig
    from usher2.simulate import SimulationConfig, oracle_aucs, simulate_cohort

    console.print(
        f"[bold]usher2 {__version__} demo[/] — {n_train} training and {n_test} test patients "
        f"(seeds {seed}, {seed + 1}) -> {out}"
    )
    t0 = time.perf_counter()
    with _user_errors():
        sim = SimulationConfig()
        cohorts = {}
        for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
            with _progress(f"simulate {name} cohort") as progress:
                cohorts[name] = simulate_cohort(n, s, out / name, config=sim, progress=progress)
        _print_oracle_aucs(cohorts["test"], sim, "oracle AUCs of the test cohort (the best any model can do)")
        if config is not None:
            cfg = PipelineConfig.from_yaml(config)
        else:
            cfg = PipelineConfig(
                enhancer="pix2pix", masks="predicted", clinical=DEMO_CLINICAL, workers=workers, seed=seed
            )
        subset = oracle_aucs(cohorts["test"], sim)
        oracle = {m: subset[FAMILY_ORACLE[m.partition(":")[0]]] for m in cfg.models}
        pipe = Pipeline(cfg, progress=_progress, log=console.print)
        description = (
            f"Simulated breast-ultrasound cohorts (usher2.simulate, default settings): {n_train} training patients "
            f"(seed {seed}) and {n_test} held-out test patients (seed {seed + 1}), one frame each; the HER2 label "
            "is drawn from a documented logistic model of clinical variables and lesion traits, so oracle AUCs "
            "are known."
        )
        result = pipe.run(
            out / "train" / "manifest.csv",
            out / "test" / "manifest.csv",
            out / "run",
            title="usher2 demo: HER2 status on simulated ultrasound",
            oracle=oracle,
            data_description=description,
        )
    table = Table(title="HER2 models: nested-CV AUC on the training cohort, AUC on the held-out cohort")
    for col in ("model", "nested-CV AUC (95% CI)", "test AUC (95% CI)", "oracle AUC", "ratio"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in result.table.itertuples():
        table.add_row(
            r.model,
            f"{r.cv_auc:.3f} ({r.cv_ci_low:.3f}-{r.cv_ci_high:.3f})",
            f"{r.test_auc:.3f} ({r.test_ci_low:.3f}-{r.test_ci_high:.3f})",
            f"{r.oracle_auc:.3f}",
            f"{r.test_auc / r.oracle_auc:.3f}",
        )
    console.print(table)
    console.print(f"report: {result.report}")
    console.print(f"bundles: {result.out / 'bundles'}; total {time.perf_counter() - t0:.0f} s")


QUICK = {"n_train": 60, "n_test": 60, "outer_folds": 3, "shape_zyx": (16, 64, 64), "spacing_zyx_mm": (3.0, 1.5, 1.5)}


@mri_app.command("reproduce")
def mri_reproduce(
    study: Annotated[
        str,
        typer.Argument(metavar="STUDY", help="prostate, breast-mpmri, breast-birads, breast-deep, or a recipe YAML."),
    ],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: usher2-mri-STUDY).")] = None,
    n_train: Annotated[
        int | None, typer.Option("--n-train", min=20, help="Training phantoms (recipe default).")
    ] = None,
    n_test: Annotated[int | None, typer.Option("--n-test", min=10, help="Held-out phantoms (recipe default).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed (the held-out cohort uses seed + 1).")] = 0,
    validation: Annotated[
        str | None, typer.Option("--validation", help="split (train/test) or nested (pooled nested CV).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes for simulation and extraction.")] = 1,
    train: Annotated[Path | None, typer.Option("--train", help="Your training manifest instead of phantoms.")] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Your held-out manifest (with --train).")] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A smoke-size run: 60 + 60 small phantoms, 3 outer folds.")
    ] = False,
) -> None:
    """Reproduce an MRI study's recipe on phantoms with known truth (or on your manifests).

    Simulate training and held-out phantoms, extract the recipe's features, fit every model
    (nested CV, selection inside the folds), score the held-out cohort once, and write per task
    an evaluation directory with the cohort report and the study's own analyses. The table
    compares each model's held-out AUC with the oracle AUC of what it can see.
    """
    from rich.table import Table

    from usher2.mri.recipes import TARGET_RATIO, load_recipe, reproduce

    with _user_errors():
        recipe = load_recipe(study)
        out = out or Path(f"usher2-mri-{recipe.study}")
        phantom = None
        if quick:
            n_train, n_test = n_train or QUICK["n_train"], n_test or QUICK["n_test"]
            phantom = {"shape_zyx": QUICK["shape_zyx"], "spacing_zyx_mm": QUICK["spacing_zyx_mm"]}
        console.print(f"[bold]usher2 {__version__} mri reproduce {recipe.study}[/] ({recipe.reference}) -> {out}")
        bars: dict[str, Any] = {}
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in bars:
                    bars[stage] = bar.add_task(stage, total=total)
                bar.update(bars[stage], completed=done, total=total)

            result = reproduce(
                recipe,
                out,
                n_train=n_train,
                n_test=n_test,
                seed=seed,
                validation=validation,
                workers=workers,
                phantom=phantom,
                outer_folds=QUICK["outer_folds"] if quick else None,
                train=train,
                test=test,
                progress=progress,
                log=lambda m: bar.console.print(m, highlight=False),
            )
    t = result.table
    held = "test_auc" in t.columns
    table = Table(title=f"{recipe.title}: {'held-out' if held else 'nested-CV'} AUC next to the oracle")
    for col in ("task", "model", "nested-CV AUC (95% CI)", "held-out AUC (95% CI)", "oracle", "ratio", "final"):
        table.add_column(col, justify="left" if col in ("task", "model") else "right")
    for r in t.to_dict(orient="records"):
        test_auc = f"{r['test_auc']:.3f} ({r['test_ci_low']:.3f}-{r['test_ci_high']:.3f})" if held else "-"
        ratio = r.get("ratio")
        mark = (
            "" if not r["final"] else ("yes" if r.get("meets_target") else "[red]below[/]" if ratio == ratio else "-")
        )
        table.add_row(
            r["task"],
            r["model"],
            f"{r['cv_auc']:.3f} ({r['cv_ci_low']:.3f}-{r['cv_ci_high']:.3f})",
            test_auc,
            f"{r['oracle_auc']:.3f}" if r["oracle_auc"] == r["oracle_auc"] else "-",
            f"{ratio:.3f}" if ratio is not None and ratio == ratio else "-",
            mark,
        )
    console.print(table)
    console.print(f"final models meet {TARGET_RATIO} x oracle where 'final' says yes; all numbers in {out / 'auc.csv'}")
    for task_name, path in result.reports.items():
        console.print(f"report [{task_name}]: {path}")
    if result.fallbacks:
        console.print(f"fallbacks used: {result.fallbacks}")
    console.print(f"total {result.seconds['total']:.0f} s")


@app.command()
def report(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="BUNDLE|DIR",
            help="Evaluation directory (usher2 demo / evaluate / Pipeline.evaluate) or a model bundle folder.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
    cam_examples: Annotated[int, typer.Option("--cam-examples", min=0, help="Grad-CAM examples per group.")] = 3,
    verify: Annotated[Path | None, typer.Option("--verify", envvar=_KEY_ENV, help=_VERIFY_HELP)] = None,
    nomogram: Annotated[
        str,
        typer.Option(
            "--nomogram",
            help="imaging: one axis for the imaging score (Radscore, Deep Score, DLR score) plus one per clinical "
            "variable; features: one axis per selected feature.",
        ),
    ] = "imaging",
) -> None:
    """Write the self-contained HTML cohort report of an evaluation directory or of a bundle.

    A bundle's report covers its training cohort: the nested-CV out-of-fold predictions (ROC with
    DeLong CI, threshold metrics, calibration, DCA) and its nomogram; its evaluation directory is
    written beside the HTML file (OUT stem + "_files").
    """
    from usher2.pipeline import evaluation_from_bundle
    from usher2.report import write_cohort_report

    with _user_errors():
        if (source / "hashes.json").is_file():
            if verify is not None:
                from usher2.fusion.bundle import load_bundle

                load_bundle(source, verify_key=_bundle_key(verify))
            source = evaluation_from_bundle(source, out.with_name(out.stem + "_files"))
        path = write_cohort_report(source, out, cam_examples=cam_examples, nomogram=nomogram)
    console.print(f"report: {path}")


@app.command()
def serve(
    bundle: Annotated[Path, typer.Option("--bundle", help="Model bundle folder from usher2 fit.")],
    host: Annotated[str, typer.Option("--host", help="Interface to bind (default: this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.1, help="Request size limit.")] = 20,
    max_megapixels: Annotated[
        float,
        typer.Option(
            "--max-megapixels", help="Largest decoded frame (2**20 pixels), checked before decoding; larger: 413."
        ),
    ] = 64,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", min=1, help="Threads reading and encoding uploads.")
    ] = 2,
    max_queue: Annotated[int, typer.Option("--max-queue", min=0, help="Requests that may wait; then 503.")] = 16,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Most frames per batched pass through the networks.")
    ] = 16,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="Longest wait (ms) for a batch to fill.")
    ] = 5.0,
    cam: Annotated[str, typer.Option("--cam", help="Heat-map method (gradcam, ..., none).")] = "gradcam",
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    verify: Annotated[Path | None, typer.Option("--verify", envvar=_KEY_ENV, help=_VERIFY_HELP)] = None,
    device: DeviceOption = None,
) -> None:
    """Serve a bundle over HTTP: POST /v1/score, GET /v1/model, GET /healthz, the web page at /, /docs.

    Set USHER2_API_TOKEN to require "Authorization: Bearer <token>" (the web page has a token field).
    """
    from usher2.service import serve as run_service

    with _user_errors():
        if not (bundle / "hashes.json").is_file():
            raise InputError(bundle, "a model bundle folder from usher2 fit", "no hashes.json")
        console.print(f"usher2 {__version__}: serving {bundle} on http://{host}:{port}/ (Ctrl-C stops)")
        run_service(
            bundle,
            host=host,
            port=port,
            max_upload_mb=max_upload_mb,
            max_megapixels=max_megapixels,
            max_concurrent=max_concurrent,
            max_queue=max_queue,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            cam=None if cam == "none" else cam,
            log_level=log_level,
            verify_key=_bundle_key(verify),
            device=device,
        )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
