"""The ``usher2`` command line: a thin shell over the library.

Command names and arguments are a public contract (see DESIGN.md): add options, never rename.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from usher2 import __version__
from usher2.io.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

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


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where the demo writes its cohort.")] = DEFAULT_DEMO_DIR,
    n: Annotated[int, typer.Option("--n", min=10, help="Number of simulated patients (one frame each).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """The main job on the embedded synthetic cohort: needs no data and no download."""
    from usher2.simulate import SimulationConfig, simulate_cohort

    console.print(f"[bold]usher2 {__version__} demo[/] — synthetic cohort of {n} cases, seed {seed}")
    with _user_errors():
        config = SimulationConfig()
        cohort = out / "cohort"
        t0 = time.perf_counter()
        with _progress("1/1 simulate cohort") as progress:
            manifest = simulate_cohort(n, seed, cohort, config=config, progress=progress)
        dt = time.perf_counter() - t0
    _print_oracle_aucs(manifest, config, "oracle AUCs (the best any model can do)")
    console.print(f"{_rate(manifest, dt)}, prevalence {manifest['label'].mean():.3f}")
    console.print(f"manifest: {cohort / 'manifest.csv'}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
