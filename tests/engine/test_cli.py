"""``python -m engine``: end to end as a subprocess, and its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from engine.__main__ import main

from ..conftest import make_painting, make_photo

REPO = Path(__file__).resolve().parents[2]


def run_engine(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("ATELIER_VGG_WEIGHTS", None)
    done = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    # Decoded by hand: text mode would turn the progress line's carriage returns into newlines.
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A photo PNG carrying text and EXIF metadata, and a painting JPEG."""
    photo_path, painting_path = tmp_path / "photo.png", tmp_path / "painting.jpg"
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "someone private")
    exif = Image.Exif()
    exif[0x010E] = "secret description"
    make_photo(96, 72).save(photo_path, pnginfo=text, exif=exif)
    make_painting().save(painting_path, quality=95)
    assert "Author" in Image.open(photo_path).info
    return photo_path, painting_path


def test_paint_end_to_end(
    tmp_path: Path, inputs: tuple[Path, Path], vgg_weights_path: Path
) -> None:
    photo, painting = inputs
    out = tmp_path / "out.png"
    result = run_engine(
        "paint", str(photo), str(painting), "-o", str(out),
        "--size", "64", "--steps", "3,3", "--quality", "draft", "--strength", "7",
        "--brush", "small", "--seed", "5", "--device", "cpu", "--weights", str(vgg_weights_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith(f"wrote {out} (64x48, 6 steps")
    # The progress bar is one line redrawn with carriage returns, ending at 100 %.
    bar = result.stderr.strip()
    assert "\n" not in bar
    assert bar.count("\r") >= 1
    assert bar.rsplit("\r", 1)[-1].startswith("scale 1/1 [")
    assert "100%" in bar.rsplit("\r", 1)[-1]
    written = Image.open(out)
    assert written.format == "PNG"
    assert written.size == (64, 48)
    assert "Author" not in written.info
    assert "exif" not in written.info
    assert "icc_profile" not in written.info
    assert dict(written.getexif()) == {}


def test_a_blend_with_a_timelapse_from_the_command_line(
    tmp_path: Path, inputs: tuple[Path, Path], vgg_weights_path: Path
) -> None:
    photo, painting = inputs
    second = tmp_path / "second.png"
    make_painting(80, 48, seed=9).save(second)
    out, animation = tmp_path / "out.png", tmp_path / "out.webp"
    result = run_engine(
        "paint", str(photo), str(painting), "-o", str(out), "--painting2", str(second),
        "--blend", "30", "--timelapse", str(animation), "--size", "64", "--steps", "4,3",
        "--seed", "5", "--device", "cpu", "--weights", str(vgg_weights_path), "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (summary,) = result.stdout.strip().splitlines()
    assert summary.startswith(f"wrote {out} (64x48, 7 steps")
    assert summary.endswith(f" and {animation} (8 frames, 64x48)")
    with Image.open(animation) as webp:
        assert webp.format == "WEBP" and webp.is_animated and webp.size == (64, 48)
    assert result.stderr == ""


def test_bad_image_is_one_line_without_traceback(tmp_path: Path, vgg_weights_path: Path) -> None:
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    make_painting().save(tmp_path / "painting.png")
    result = run_engine(
        "paint", str(bad), str(tmp_path / "painting.png"), "-o", str(tmp_path / "out.png"),
        "--weights", str(vgg_weights_path),
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "photo" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_missing_weights_file_names_the_fix(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo, painting = inputs
    code = main(
        [
            "paint",
            str(photo),
            str(painting),
            "-o",
            str(tmp_path / "o.png"),
            "--weights",
            "/no/such.pth",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "does not exist" in err
    assert "fetch-weights" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--strength", "11"], "strength 11 is out of range"),
        (["--quality", "ultra"], "invalid choice"),
        (["--steps", "3,x"], "is not a list"),
        (["-o", "out.gif"], "must end in .png"),
        (["--blend", "30"], "--blend needs --painting2"),
        (["--painting2", "p2.png", "--blend", "130"], "blend 130 is out of range: use 0 to 100"),
        (["--timelapse", "t.gif"], "timelapse 't.gif' must end in .webp or .mp4"),
    ],
)
def test_bad_options_are_one_line_errors(
    inputs: tuple[Path, Path],
    vgg_weights_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: str,
) -> None:
    photo, painting = inputs
    argv = [
        "paint",
        str(photo),
        str(painting),
        "-o",
        "out.png",
        "--weights",
        str(vgg_weights_path),
        *args,
    ]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit with status 2
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert expected in err


def test_missing_photo_file(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, painting = inputs
    code = main(["paint", str(tmp_path / "nope.jpg"), str(painting), "-o", str(tmp_path / "o.png")])
    assert code == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: cannot read the photo '{tmp_path / 'nope.jpg'}': No such file or directory"
    )


@pytest.mark.parametrize("which", ["output", "timelapse"])
def test_an_output_that_cannot_be_written_is_refused_before_painting(
    inputs: tuple[Path, Path],
    vgg_weights_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
) -> None:
    """Not after minutes of painting, with a bare errno: at once, naming the option."""
    photo, painting = inputs
    out, animation = tmp_path / "out.png", tmp_path / "out.webp"
    missing = tmp_path / "no-such-folder" / ("out.png" if which == "output" else "out.webp")
    outputs = ["-o", str(missing if which == "output" else out)]
    outputs += ["--timelapse", str(missing if which == "timelapse" else animation)]
    code = main(
        ["paint", str(photo), str(painting), *outputs, "--size", "48", "--steps", "2,1",
         "--device", "cpu", "--weights", str(vgg_weights_path), "-q"]
    )  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        f"error: cannot write the {which} {str(missing)!r}: its folder does not exist"
    )
    assert not out.exists() and not animation.exists()  # nothing painted, nothing half-written
