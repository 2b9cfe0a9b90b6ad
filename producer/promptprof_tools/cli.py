"""The ``promptprof`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from promptprof import ConfigError, load_settings
from promptprof._logs import setup_logging
from promptprof_tools.settings import ToolSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptprof", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML settings file (or PROMPTPROF_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="start, stop or check the local Kafka and InfluxDB")
    stack.add_argument("action", choices=["up", "down", "status"])

    demo = commands.add_parser("demo", help="simulated LLM traffic through the whole pipeline")
    demo.add_argument("--duration", type=float, default=75.0, help="seconds of traffic")
    demo.add_argument("--rate", type=float, default=200.0, help="calls per second")

    commands.add_parser("worker", help="run a stream-processor worker (Faust) with its sink")

    compare = commands.add_parser("compare", help="compare two bench runs; exit 1 on regression")
    compare.add_argument("base", type=Path, help="the baseline run file")
    compare.add_argument("candidate", type=Path, help="the candidate run file")
    compare.add_argument("--thresholds", type=Path, help="YAML thresholds file")
    compare.add_argument("--markdown", type=Path, help="write the Markdown report here")
    compare.add_argument("--html", type=Path, help="write the HTML report here")
    compare.add_argument("--json", type=Path, help="write the JSON report here")

    bench = commands.add_parser("bench", help="run a prompt suite and write a run file")
    bench.add_argument("suite", type=Path, help="the suite YAML file")
    bench.add_argument("--out", type=Path, required=True, help="the run file to write")
    bench.add_argument("--seed", type=int, help="seed for the simulated provider")
    bench.add_argument("--prompt-dir", type=Path, help="where the suite's prompt files live")

    ci = commands.add_parser("ci", help="bench changed prompts against a git ref and compare")
    ci.add_argument("--base-ref", required=True, help="git ref of the baseline, e.g. origin/main")
    ci.add_argument("--suite", type=Path, help="suite file (default: every suite that applies)")
    ci.add_argument("--out-dir", type=Path, default=Path("promptprof-ci"), help="reports go here")
    ci.add_argument(
        "--order", choices=("blocked", "sequential"), default="blocked",
        help="blocked: base and candidate calls interleaved in shuffled pairs (default); "
        "sequential: every base call, then every candidate call",
    )

    report = commands.add_parser("report", help="a self-contained HTML report from InfluxDB")
    report.add_argument("--since", default="1h", help="how far back, e.g. 30m, 1h, 2d")
    report.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write")
    report.add_argument("--png-dir", type=Path, help="also write each chart as a PNG here")

    status = commands.add_parser("status", help="the pipeline's health, read from InfluxDB")
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")

    schema = commands.add_parser("schema", help="write the call-event JSON Schema")
    schema.add_argument("--out", type=Path, help="file to write (default: stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``promptprof`` command."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config, ToolSettings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.log_format, settings.log_level)
    return _dispatch(args, settings)


def _dispatch(args: argparse.Namespace, settings: ToolSettings) -> int:
    if args.command == "stack":
        from promptprof_tools.stack import stack_command

        return stack_command(args.action, settings)
    if args.command == "demo":
        from promptprof_tools.demo.run import run_demo

        return asyncio.run(run_demo(settings, args.duration, args.rate, args.config))
    if args.command == "worker":
        return _worker(args.config)
    if args.command == "compare":
        from promptprof_compare.cli import compare_command

        return compare_command(
            args.base, args.candidate, args.thresholds, args.markdown, args.html, args.json
        )
    if args.command == "bench":
        from promptprof_compare.runner import bench_command

        return bench_command(args.suite, args.out, args.seed, settings, args.prompt_dir)
    if args.command == "ci":
        from promptprof_compare.ci import ci_command

        return ci_command(args.base_ref, args.suite, args.out_dir, settings, args.order)
    if args.command == "report":
        from promptprof_processor.report.command import report_command

        return report_command(settings, args.since, args.out, args.png_dir)
    if args.command == "status":
        from promptprof_processor.health.command import status_command

        return status_command(args.config, args.json)
    if args.command == "schema":
        from promptprof._schema import write_schema

        return write_schema(args.out)
    raise AssertionError(f"unhandled command {args.command}")


def _worker(config: Path | None) -> int:
    from promptprof_processor.runtime.worker import run_worker
    from promptprof_processor.settings import ProcessorSettings

    try:
        settings = load_settings(config, ProcessorSettings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
