"""``jaffnet replay``: re-judge the line's logged frames with another model version.

The shadow test before moving ``champion``: every frame the decision log kept goes
through the candidate's input contract and decision rule by the same frame -> probability
path the endpoint uses (``jaffnet.frames.predict_frames``, then ``jaffnet.decision.judge``),
and the table says where the candidate would have decided otherwise: OK->NG (more
overkill, or escapes caught) and NG->OK (escapes, or overkill removed), per line and
logged decision, with the request ids of every flip.

``--reviewed`` asks the promotion question instead, "is it better on our line": only the frames
operators reviewed are re-judged, and the candidate's escapes and overkill against their verdicts
stand next to the logged model's, per line, as sampling-weighted rates with 95 % upper bounds
(``pipelines.evaluation.line_reviews``: the weights and what they assume).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.cli_options import add_log_selection, add_tracking_uri
from pipelines.decision_records import DecisionReader, StoredDecision, png_bytes
from pipelines.evaluation.calibration import RateCount
from pipelines.evaluation.line_reviews import Errors, ReviewSample, errors_by_line, judged_frames

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
    reader, loaded = _open(log_folder, model_uri)
    report = ReplayReport(model=_label(loaded), source=str(model_uri),
                          in_range=reader.total(since=since, until=until, line=line))
    kept = reader.with_frames(since=since, until=until, line=line)
    for stored, frame, verdict in judged_frames(kept, loaded, batch_size=batch_size, max_regions=max_regions):
        report.frames += 1
        if verdict.decision == stored.decision:
            report.same[stored.line or "-", stored.decision] += 1
            continue
        flip = Flip(stored, verdict.decision, verdict.image_score)
        report.flips.append(flip)
        if overlay_dir is not None:
            _write_flip_overlay(Path(overlay_dir), flip, frame, verdict)
    return report


def _open(log_folder: str | Path, model_uri: str):
    from pipelines import registry

    reader = DecisionReader(log_folder)
    if not reader.exists():
        raise FileNotFoundError(f"no decision log in {log_folder} (expected {reader.path.name})")
    return reader, registry.load_model(model_uri)


def _label(loaded) -> str:
    return f"{loaded.name or 'local'}/{loaded.version or 'local'}"


# -- against the operators' verdicts ----------------------------------------------------------------

@dataclass
class ReviewedReplay:
    """The candidate's and the logged model's errors against the reviews of one log selection."""

    model: str
    source: str
    in_range: int  # records in range, with or without a kept frame
    sample: ReviewSample
    candidate_ng: list[bool] = field(default_factory=list)  # in the order of sample.rows

    def figures(self) -> dict[str, tuple[Errors, Errors]]:
        """Per line (then all lines): (the logged model's errors, the candidate's)."""
        sample, weights = self.sample, self.sample.weights()
        logged = errors_by_line(sample.lines(), sample.truth_ng(), sample.logged_ng(), weights)
        candidate = errors_by_line(sample.lines(), sample.truth_ng(), self.candidate_ng, weights)
        return {line: (logged[line], candidate[line]) for line in logged}

    def table(self) -> str:
        sample = self.sample
        kept = len(sample.rows) + sample.unreviewed + sample.reported_escapes
        lines = [f"replayed {len(sample.rows)} reviewed frames with {self.model} ({self.source}) against the "
                 f"operators' verdicts; skipped {sample.unreviewed} kept frame(s) nobody reviewed, "
                 f"{sample.reported_escapes} with only an escape report (not a random sample) and "
                 f"{self.in_range - kept} record(s) in range that kept no frame",
                 "rates weighted by 1/sample_rate within each line and logged decision; upper: one-sided 95 % "
                 "(Clopper-Pearson on the effective count)", ""]
        header = (f"{'line':<16} {'model':<9} {'escapes':>9} {'rate':>8} {'upper':>8} "
                  f"{'overkill':>9} {'rate':>8} {'upper':>8}")
        lines += [header, "-" * len(header)]
        for line, (logged, candidate) in self.figures().items():
            for name, errors in (("logged", logged), ("candidate", candidate)):
                lines.append(f"{line:<16} {name:<9} {_cells(errors.escape)} {_cells(errors.overkill)}")
        return "\n".join(lines)


def _cells(count: RateCount) -> str:
    """errors/frames, weighted rate, upper bound."""
    def percent(value):
        return "-" if value is None else f"{100 * value:.1f} %"

    return f"{f'{count.errors}/{count.frames}':>9} {percent(count.rate):>8} {percent(count.upper):>8}"


def replay_reviewed(log_folder: str | Path, model_uri: str, *, since: float | None = None,
                    until: float | None = None, line: str | None = None, batch_size: int = 8) -> ReviewedReplay:
    """Re-judge the reviewed kept frames of the log with ``model_uri``: see :class:`ReviewedReplay`."""
    reader, loaded = _open(log_folder, model_uri)
    report = ReviewedReplay(model=_label(loaded), source=str(model_uri),
                            in_range=reader.total(since=since, until=until, line=line), sample=ReviewSample())
    reviewed = (row for row in reader.with_frames(since=since, until=until, line=line) if report.sample.offer(row[0]))
    for _, _, verdict in judged_frames(reviewed, loaded, batch_size=batch_size):
        report.candidate_ng.append(verdict.decision == "NG")
    return report


def _write_flip_overlay(directory: Path, flip: Flip, frame, verdict) -> Path:
    """The replaying model's mask and regions on the frame: what it saw that the line did not."""
    from serving.overlay import draw_overlay

    directory.mkdir(parents=True, exist_ok=True)
    transition = flip.transition.replace("->", "-to-")
    target = directory / f"{flip.stored.request_id}_{transition}.png"
    target.write_bytes(png_bytes(draw_overlay(frame, verdict.mask, [r.to_dict() for r in verdict.regions])))
    return target


# -- the command -------------------------------------------------------------------------------

DESCRIPTION = ("Runs every frame the decision log kept through MODEL's input contract and decision rule (the "
               "endpoint's own path) and prints OK->NG / NG->OK flips per line and logged decision, with the "
               "request ids of the flips. With --reviewed: only the frames operators reviewed, and the escapes "
               "and overkill of MODEL and of the logged model against the operators' verdicts, per line, as "
               "sampling-weighted rates with one-sided 95 % upper bounds (is it better on our line?).")


def add_commands(subparsers, bench_subparsers) -> None:
    help_text = "re-judge the decision log's frames with another model version (shadow test)"
    command = subparsers.add_parser("replay", help=help_text, description=DESCRIPTION)
    command.add_argument("--log", required=True, help="the decision log folder (decision_log.folder)")
    command.add_argument("--model", required=True, help="registry URI (models:/jaffnet@candidate) or saved-model dir")
    add_log_selection(command)
    command.add_argument("--reviewed", action="store_true",
                         help="compare MODEL and the logged model with the operators' reviews instead of with "
                              "each other (unreviewed frames are skipped and counted)")
    add_tracking_uri(command)
    command.add_argument("--batch-size", type=int, default=8, help="model inputs per forward")
    command.add_argument("--overlay-dir",
                         help="write <request_id>_<OK-to-NG|NG-to-OK>.png for every flip (not with --reviewed)")
    command.set_defaults(func=replay_command)


def replay_command(args) -> int:
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    from pipelines.registry import configure_tracking

    if args.reviewed and args.overlay_dir:
        print("error: --overlay-dir draws flips, which --reviewed does not list", file=sys.stderr)
        return 2
    configure_tracking(args.tracking_uri)
    selection = {"since": args.since, "until": args.until, "line": args.line, "batch_size": args.batch_size}
    try:
        report = replay_reviewed(args.log, args.model, **selection) if args.reviewed else \
            replay(args.log, args.model, overlay_dir=args.overlay_dir, **selection)
    except (FileNotFoundError, LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    return 0
