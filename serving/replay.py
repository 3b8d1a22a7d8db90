"""``jaffnet replay``: re-judge the line's logged frames with another model version.

The shadow test before moving ``champion``: every frame the decision log kept goes
through the candidate's input contract and decision rule by the same frame -> probability
path the endpoint uses (``jaffnet.frames.predict_frames``, then ``jaffnet.decision.judge``),
and the table says where the candidate would have decided otherwise: OK->NG (more
overkill, or escapes caught) and NG->OK (escapes, or overkill removed), per line and
logged decision, with the request ids of every flip.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pipelines.cli_options import add_tracking_uri
from pipelines.decision_records import DecisionReader, StoredDecision, png_bytes, read_png

TRANSITIONS = ("OK->NG", "NG->OK")


@dataclass(frozen=True)
class Flip:
    stored: StoredDecision
    decision: str
    image_score: float

    @property
    def transition(self) -> str:
        return f"{self.stored.decision}->{self.decision}"


@dataclass
class ReplayReport:
    model: str  # name/version of the replaying model
    source: str
    frames: int = 0
    in_range: int = 0  # records in the range, with or without a kept frame
    same: Counter = field(default_factory=Counter)  # (line, logged decision) -> frames judged the same
    flips: list[Flip] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, int, int, int]]:
        """(line, logged decision, frames, same, flipped), one per line and logged decision."""
        flipped = Counter((flip.stored.line or "-", flip.stored.decision) for flip in self.flips)
        keys = sorted(set(self.same) | set(flipped))
        return [(line, logged, self.same[line, logged] + flipped[line, logged], self.same[line, logged],
                 flipped[line, logged]) for line, logged in keys]

    def table(self) -> str:
        header = f"{'line':<16} {'logged':<6} {'frames':>7} {'same':>7} {'flipped':>7} {'agreement':>10}"
        lines = [f"replayed {self.frames} logged frames with {self.model} ({self.source}); "
                 f"{self.in_range - self.frames} record(s) in range kept no frame (decision_log.frames)",
                 "", header, "-" * len(header)]
        for line, logged, frames, same, flipped in self.rows():
            lines.append(f"{line:<16} {logged:<6} {frames:>7} {same:>7} {flipped:>7} {_percent(same, frames):>10}")
        same_total = sum(self.same.values())
        lines += ["-" * len(header),
                  f"{'all':<16} {'':<6} {self.frames:>7} {same_total:>7} {len(self.flips):>7} "
                  f"{_percent(same_total, self.frames):>10}", ""]
        counts = Counter(flip.transition for flip in self.flips)
        lines.append("   ".join(f"{transition} {counts[transition]}" for transition in TRANSITIONS))
        for flip in self.flips:
            stored = flip.stored
            lines.append(f"  {flip.transition}  line={stored.line or '-'}  station={stored.station or '-'}  "
                         f"part={stored.part_id or '-'}  {stored.request_id}  image_score "
                         f"{stored.image_score:.4f} -> {flip.image_score:.4f}")
        return "\n".join(lines)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def replay(log_folder: str | Path, model_uri: str, *, since: float | None = None, until: float | None = None,
           line: str | None = None, batch_size: int = 8,
           overlay_dir: str | Path | None = None, max_regions: int = 100) -> ReplayReport:
    """Re-judge every kept frame of the log (oldest first) with ``model_uri``'s contract and rule."""
    from jaffnet.decision import judge
    from jaffnet.frames import predict_frames
    from jaffnet.inference import build_predictor
    from pipelines import registry

    reader = DecisionReader(log_folder)
    if not reader.exists():
        raise FileNotFoundError(f"no decision log in {log_folder} (expected {reader.path.name})")
    loaded = registry.load_model(model_uri)
    predictor = build_predictor(loaded.model, "eager")
    report = ReplayReport(model=f"{loaded.name or 'local'}/{loaded.version or 'local'}", source=str(model_uri),
                          in_range=reader.total(since=since, until=until, line=line))
    kept = reader.with_frames(since=since, until=until, line=line)  # one frame in memory at a time (+ a batch)
    for (stored, frame), probability in predict_frames(_decoded(kept), loaded.contract, predictor,
                                                       batch_size=batch_size, image_of=lambda item: item[1]):
        verdict = judge(probability, loaded.rule, max_regions)
        report.frames += 1
        if verdict.decision == stored.decision:
            report.same[stored.line or "-", stored.decision] += 1
            continue
        flip = Flip(stored, verdict.decision, verdict.image_score)
        report.flips.append(flip)
        if overlay_dir is not None:
            _write_flip_overlay(Path(overlay_dir), flip, frame, verdict)
    return report


def _decoded(rows: Iterator[tuple[StoredDecision, bytes]]) -> Iterator[tuple[StoredDecision, object]]:
    for stored, frame_png in rows:
        yield stored, read_png(frame_png)  # the 8-bit RGB frame the endpoint judged


def _write_flip_overlay(directory: Path, flip: Flip, frame, verdict) -> Path:
    """The replaying model's mask and regions on the frame: what it saw that the line did not."""
    from serving.overlay import draw_overlay

    directory.mkdir(parents=True, exist_ok=True)
    transition = flip.transition.replace("->", "-to-")
    target = directory / f"{flip.stored.request_id}_{transition}.png"
    target.write_bytes(png_bytes(draw_overlay(frame, verdict.mask, [r.to_dict() for r in verdict.regions])))
    return target


# -- the command -------------------------------------------------------------------------------

def _moment(text: str) -> float:
    """ISO 8601 (UTC when no zone is given) -> unix seconds."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


DESCRIPTION = ("Runs every frame the decision log kept through MODEL's input contract and decision rule (the "
               "endpoint's own path) and prints OK->NG / NG->OK flips per line and logged decision, with the "
               "request ids of the flips.")


def add_commands(subparsers, bench_subparsers) -> None:
    help_text = "re-judge the decision log's frames with another model version (shadow test)"
    command = subparsers.add_parser("replay", help=help_text, description=DESCRIPTION)
    command.add_argument("--log", required=True, help="the decision log folder (decision_log.folder)")
    command.add_argument("--model", required=True, help="registry URI (models:/jaffnet@candidate) or saved-model dir")
    command.add_argument("--since", type=_moment, help="ISO 8601 time, inclusive (UTC without a zone)")
    command.add_argument("--until", type=_moment, help="ISO 8601 time, exclusive")
    command.add_argument("--line", help="only this line")
    add_tracking_uri(command)
    command.add_argument("--batch-size", type=int, default=8, help="model inputs per forward")
    command.add_argument("--overlay-dir", help="write <request_id>_<OK-to-NG|NG-to-OK>.png for every flip")
    command.set_defaults(func=replay_command)


def replay_command(args) -> int:
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    from pipelines.registry import configure_tracking

    configure_tracking(args.tracking_uri)
    try:
        report = replay(args.log, args.model, since=args.since, until=args.until, line=args.line,
                        batch_size=args.batch_size, overlay_dir=args.overlay_dir)
    except (FileNotFoundError, LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    return 0
