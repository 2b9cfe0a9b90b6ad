"""The library's boundary: which modules are public, what the library imports, which settings a
service carries, and which shipped files a wheel holds."""

from __future__ import annotations

import ast
import fnmatch
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import promptprof
import promptprof_tools
from promptprof import ProducerSettings, Settings, TopicSettings, load_settings
from promptprof_processor.settings import ProcessorSettings, ProcessorTopicSettings
from promptprof_tools.settings import ToolSettings

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = {
    "promptprof", "promptprof.export", "promptprof.integrations", "promptprof.testing",
}
OUTSIDE_THE_LIBRARY = ("promptprof_tools", "promptprof_processor", "promptprof_compare")


def _modules(package: ModuleType) -> list[str]:
    found = pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
    return [package.__name__, *(module.name for module in found)]


def test_every_module_but_the_public_namespaces_is_private_by_name() -> None:
    public = {m for m in _modules(promptprof) if not any(p.startswith("_") for p in m.split("."))}
    assert public == PUBLIC_MODULES


def test_the_library_source_never_imports_the_tools_the_processor_or_compare() -> None:
    package_dir = Path(promptprof.__file__).parent
    offending = []
    for source in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offending += [f"{source.name}: {n}" for n in names
                          if n.split(".")[0] in OUTSIDE_THE_LIBRARY]
    assert offending == []


USE_THE_LIBRARY = """
import sys
import anthropic, openai
import promptprof
from promptprof.integrations import use_prompt, wrap_anthropic, wrap_openai
from promptprof.testing import InMemoryExporter
from promptprof.testing._fake_providers import FakeProviderServer

exporter = InMemoryExporter.install(metrics_log_interval_s=0)

@promptprof.profile(prompt_id="boundary", version="1")
def answer() -> str:
    return "yes"

answer()
with promptprof.track(prompt_id="boundary", version="2"):
    pass
with FakeProviderServer() as server:
    oa = wrap_openai(openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0),
                     prompt_id="boundary", version="3")
    oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    for _ in oa.chat.completions.create(model="gpt-4o-mini", stream=True,
                                        messages=[{"role": "user", "content": "hi"}]):
        pass
    an = wrap_anthropic(anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="k",
                                            max_retries=0), prompt_id="boundary", version="4")
    with use_prompt(version="5"):
        an.messages.create(model="claude-3-5-haiku-latest", max_tokens=10,
                           messages=[{"role": "user", "content": "hi"}])
assert len(exporter.events()) == 5, exporter.events()
promptprof.shutdown()
print("imported:", sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:]))
"""


def test_profile_track_and_the_wrappers_import_no_tool_processor_or_compare_module() -> None:
    done = subprocess.run([sys.executable, "-c", USE_THE_LIBRARY, *OUTSIDE_THE_LIBRARY],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout.splitlines(), done.stdout


def test_a_service_settings_hold_only_logging_kafka_its_topics_and_the_producer() -> None:
    assert set(Settings.model_fields) == {"log_format", "log_level", "kafka", "topics", "producer"}
    assert set(TopicSettings.model_fields) == {"calls", "producer_stats"}
    assert set(ProcessorTopicSettings.model_fields) == {
        "calls", "producer_stats", "dead_letter", "windows", "alerts", "partitions",
    }
    assert {"influx", "windows", "worker", "alerts"} <= set(ProcessorSettings.model_fields)
    assert "stack" not in ProcessorSettings.model_fields
    assert "stack" in ToolSettings.model_fields


def test_a_service_reads_a_shared_config_file_ignoring_the_worker_and_stack_sections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "promptprof.yaml"
    path.write_text(
        "producer: {service_name: checkout}\ntopics: {calls: c1, windows: w1}\n"
        "influx: {url: 'http://influx:8086'}\nstack: {kafka_port: 1234}\n"
    )
    service: Settings = load_settings(path)
    assert service.producer == ProducerSettings(service_name="checkout")
    assert service.topics == TopicSettings(calls="c1")
    tools = load_settings(path, ToolSettings)
    assert (tools.topics.windows, tools.influx.url, tools.stack.kafka_port) == (
        "w1", "http://influx:8086", 1234,
    )


def test_every_shipped_non_python_file_is_declared_package_data() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    missing = []
    for package in (promptprof, promptprof_tools):
        root = Path(package.__path__[0])
        globs = declared[package.__name__]
        for path in root.rglob("*"):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and path.suffix not in {".py", ".pyc"} and not any(
                fnmatch.fnmatch(relative, glob) for glob in globs
            ):
                missing.append(f"{package.__name__}/{relative}")
    assert missing == []


def test_the_demo_reads_its_rules_from_its_own_package() -> None:
    from promptprof_tools.demo.worker import DEMO_RULES

    assert DEMO_RULES.is_file()
    assert DEMO_RULES.is_relative_to(Path(promptprof_tools.__file__).parent)
