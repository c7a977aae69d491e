"""``python -m engine``: paint from the command line, or pre-download the VGG-19 weights.

    python -m engine paint PHOTO PAINTING -o OUT [--size N] [--quality Q] [--strength 1-10]
                     [--brush B] [--keep-colors] [--optimizer O] [--init I] [--seed N]
                     [--painting2 PATH [--blend 0-100]] [--timelapse OUT.webp|OUT.mp4]
                     [--device D] [--weights PATH]
    python -m engine fetch-weights
    python -m engine agent --redis URL [--devices cuda:0,cuda:1] [--host NAME] [--weights PATH]
                     [--work-dir DIR] [--lease SECONDS] [--metrics-port N]

Progress goes to stderr as one updating line; a one-line summary goes to stdout at the end. Bad
input (unreadable image, option out of range, missing weights) gives a one-line error and a
non-zero exit status, never a traceback. Defaults come from
:class:`engine.paint_settings.PaintSettings`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, TextIO

from engine import protocol
from engine.paint_settings import INITS, OPTIMIZERS

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("engine")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130
BAR_WIDTH = 24
BAR_INTERVAL = 0.25  # seconds between redraws of the progress line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the CLI promises one-line errors.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = protocol.PaintOptions()
    parser = _Parser(prog="python -m engine", description="Atelier's neural style transfer engine.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    paint = sub.add_parser("paint", help="paint PHOTO in the style of PAINTING")
    paint.add_argument("photo", type=Path, help="the photo (PNG, JPEG, WebP, ...)")
    paint.add_argument("painting", type=Path, help="the painting whose style to use")
    paint.add_argument(
        "-o", "--output", type=Path, required=True, help="where to write (.png or .jpg)"
    )
    paint.add_argument(
        "--size", type=int, help="long side of the result in px (default: the quality's)"
    )
    paint.add_argument("--quality", choices=protocol.QUALITIES, default=defaults.quality)
    paint.add_argument(
        "--strength",
        type=int,
        default=defaults.strength,
        help=f"style strength {protocol.STRENGTH_MIN}-{protocol.STRENGTH_MAX} "
        f"(default {defaults.strength})",
    )
    paint.add_argument(
        "--steps",
        type=_steps,
        help="iterations per scale, coarsest first, e.g. 80,50,30 (default: the quality's)",
    )
    paint.add_argument("--brush", choices=protocol.BRUSHES, default=defaults.brush)
    paint.add_argument("--keep-colors", action="store_true", help="keep the photo's colours")
    paint.add_argument("--optimizer", choices=OPTIMIZERS, help="default: the quality's")
    paint.add_argument(
        "--init",
        choices=INITS,
        help="start from the photo, the photo in the painting's colours, or noise "
        "(default: the quality's)",
    )
    paint.add_argument("--seed", type=int, help="makes CPU runs reproducible byte for byte")
    paint.add_argument("--painting2", type=Path, help="a second painting whose style is blended in")
    paint.add_argument(
        "--blend",
        type=int,
        help=f"percent of the second painting's style, {protocol.BLEND_MIN}-{protocol.BLEND_MAX} "
        f"(default {defaults.blend})",
    )
    paint.add_argument(
        "--timelapse",
        type=Path,
        help="also write the painting emerging as an animation (.webp or .mp4, about 4 s)",
    )
    paint.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    paint.add_argument(
        "--weights",
        help="a VGG-19 state-dict file (default: $ATELIER_VGG_WEIGHTS, then torchvision's)",
    )
    paint.add_argument("-q", "--quiet", action="store_true", help="no progress line")

    sub.add_parser(
        "fetch-weights", help="download torchvision's VGG-19 weights into the torch cache"
    )

    agent = sub.add_parser("agent", help="paint jobs from Redis on this host's devices (scale-out)")
    agent.add_argument("--redis", required=True, metavar="URL", help="e.g. redis://queue:6379/0")
    agent.add_argument(
        "--devices", type=_devices, default=("cuda:0",), help="comma-separated (default cuda:0)"
    )
    agent.add_argument("--host", help="this host's name in consumer names (default: hostname)")
    agent.add_argument("--weights", help="a VGG-19 state-dict file (as for paint)")
    agent.add_argument("--work-dir", type=Path, help="where inputs and results are kept briefly")
    agent.add_argument(
        "--lease", type=float, default=30.0, help="seconds; the same on every host (default 30)"
    )
    agent.add_argument("--metrics-port", type=int, help="serve /metrics and /healthz (default off)")
    return parser


def _devices(text: str) -> tuple[str, ...]:
    devices = tuple(part.strip() for part in text.split(",") if part.strip())
    if not devices or len(set(devices)) != len(devices):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of distinct devices")
    return devices


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 80,50,30") from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError("steps must be positive")
    return steps


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "fetch-weights":
            return _fetch_weights()
        if args.command == "agent":
            return _agent(args)
        return _paint(args)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if _is_user_error(exc):
            print(f"error: {message}", file=sys.stderr)
        else:
            log.debug("unexpected failure", exc_info=True)
            hint = "" if args.verbose else " (run with -v for details)"
            print(f"error: {type(exc).__name__}: {message}{hint}", file=sys.stderr)
            if args.verbose:
                log.exception("unexpected failure")
        return EXIT_ERROR


def _is_user_error(exc: Exception) -> bool:
    from engine.errors import PaintError
    from engine.images import ImageError
    from engine.weights import WeightsError

    return isinstance(exc, ImageError | PaintError | WeightsError | protocol.OptionError | OSError)


def _fetch_weights() -> int:
    from engine import weights

    path = weights.cached_path()
    if path.is_file():
        weights.load_file(path)  # check it is readable
        print(f"VGG-19 weights already in {path}")
        return 0
    weights.load_default(allow_download=True, progress=True)
    print(f"VGG-19 weights downloaded to {path}")
    return 0


def _agent(args: argparse.Namespace) -> int:
    import asyncio

    from engine.agent import AgentSettings, run_until_signalled
    from engine.client import EngineUnavailable

    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.lease <= 0:
        raise protocol.OptionError("--lease must be positive")
    # Four renewals per lease: a host is never taken for dead over one slow round trip.
    settings = AgentSettings(
        redis_url=args.redis,
        devices=args.devices,
        lease=args.lease,
        renew_every=min(5.0, args.lease / 4),
    )
    overrides = {
        "host": args.host,
        "weights": args.weights,
        "work_dir": args.work_dir,
        "metrics_port": args.metrics_port,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    try:
        asyncio.run(run_until_signalled(settings))
    except EngineUnavailable as error:
        print(f"error: {error.message}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def agent_main() -> int:
    """The ``atelier-agent`` console script: ``python -m engine agent ...``."""
    return main(["agent", *sys.argv[1:]])


def _paint(args: argparse.Namespace) -> int:
    from engine import animation, images
    from engine.errors import Cancelled
    from engine.stylize import Commission, Stylist
    from engine.timelapse import Timelapse

    if args.blend is not None and args.painting2 is None:
        raise protocol.OptionError("--blend needs --painting2, the painting to blend in")
    options = protocol.PaintOptions(
        strength=args.strength,
        quality=args.quality,
        keep_colors=args.keep_colors,
        brush=args.brush,
        seed=args.seed,
        blend=protocol.DEFAULT_BLEND if args.blend is None else args.blend,
    ).validate()
    suffix = args.output.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise protocol.OptionError(f"output {str(args.output)!r} must end in .png, .jpg or .jpeg")
    animation_format = None
    if args.timelapse is not None:
        animation_format = args.timelapse.suffix.lower().lstrip(".")
        if animation_format not in ("webp", "mp4"):
            raise protocol.OptionError(
                f"timelapse {str(args.timelapse)!r} must end in .webp or .mp4"
            )
    _check_writable(args.output, "output")
    if args.timelapse is not None:
        _check_writable(args.timelapse, "timelapse")
    photo = _read(args.photo, "photo")
    painting = _read(args.painting, "painting")
    painting2 = None if args.painting2 is None else _read(args.painting2, "second painting")

    stylist = Stylist(weights=args.weights, device=args.device)
    overrides: dict[str, object] = {"preview_every": 0.0}
    if args.size is not None:
        overrides["long_side"] = args.size
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.optimizer is not None:
        overrides["optimizer"] = args.optimizer
    if args.init is not None:
        overrides["init"] = args.init
    settings = stylist.settings_for(options, **overrides)

    stop = _StopFlag()
    bar = _ProgressLine(sys.stderr, enabled=not args.quiet)
    timelapse = None if animation_format is None else Timelapse(photo)
    commission = Commission(
        photo,
        painting,
        settings,
        on_progress=bar.update,
        should_stop=stop,
        on_step=timelapse,
        painting2=painting2,
    )
    started = time.perf_counter()
    try:
        (result,) = stylist.paint_batch([commission])
    finally:
        stop.restore()
    bar.close()
    if isinstance(result, Cancelled):
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    if isinstance(result, Exception):
        raise result
    data = images.encode_png(result) if suffix == ".png" else images.encode_jpeg(result, quality=95)
    _write(args.output, "output", data)
    seconds = time.perf_counter() - started
    summary = (
        f"wrote {args.output} ({result.width}x{result.height}, {bar.steps} steps, "
        f"{seconds:.1f} s on {stylist.device})"
    )
    if timelapse is not None and animation_format is not None:
        frames = [frame.image for frame in timelapse.frames(animation.fit(result.size))]
        _write(args.timelapse, "timelapse", animation.encode(frames, animation_format))
        width, height = frames[0].size
        summary += f" and {args.timelapse} ({len(frames)} frames, {width}x{height})"
    print(summary)
    return 0


def _check_writable(path: Path, role: str) -> None:
    """Refuse an output that cannot be written before painting, not after (minutes on a CPU)."""
    folder = path.parent
    problem = None
    if path.is_dir():
        problem = "it is a folder"
    elif not folder.is_dir():
        problem = "its folder does not exist"
    elif not os.access(folder, os.W_OK | os.X_OK) or (
        path.exists() and not os.access(path, os.W_OK)
    ):
        problem = "permission denied"
    if problem is not None:
        raise protocol.OptionError(f"cannot write the {role} {str(path)!r}: {problem}")


def _write(path: Path, role: str, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise protocol.OptionError(
            f"cannot write the {role} {str(path)!r}: {exc.strerror or exc}"
        ) from exc


def _read(path: Path, role: str) -> Image.Image:
    from engine import images

    try:
        return images.load_path(path, role=role)
    except OSError as exc:
        raise protocol.OptionError(
            f"cannot read the {role} {str(path)!r}: {exc.strerror or exc}"
        ) from exc


class _StopFlag:
    """Ctrl-C asks the painting to stop at the next evaluation instead of killing it mid-way."""

    def __init__(self) -> None:
        self.stopped = False
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)


class _ProgressLine:
    """``scale 2/3 [#########-----]  52%  ETA 0:41  loss 1.2e+04`` redrawn in place."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.steps = 0
        self._drawn = 0.0
        self._width = 0

    def update(self, p: object) -> None:
        from engine.progress import Progress

        assert isinstance(p, Progress)
        self.steps = p.step
        now = time.perf_counter()
        if not self.enabled or (now - self._drawn < BAR_INTERVAL and p.step < p.total_steps):
            return
        self._drawn = now
        filled = round(BAR_WIDTH * p.percent / 100)
        eta = "--:--" if p.eta is None else _clock(p.eta)
        loss = p.losses.get("total")
        text = (
            f"scale {p.scale + 1}/{p.scales} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "
            f"{p.percent:3.0f}%  ETA {eta}  loss {loss if loss is None else f'{loss:.3g}'}"
        )
        if p.note:
            text += f"  ({p.note})"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return (
        f"{minutes}:{secs:02d}"
        if minutes < 60
        else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
    )


if __name__ == "__main__":
    sys.exit(main())
