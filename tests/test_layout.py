"""One plugin, one example project: ``scrapy_fleet`` never needs ``fleet_examples``.

The plugin is what ``pip install scrapy-fleet`` gives another project; the example
project (``fleet_examples``, named by ``scrapy.cfg``) is what this checkout crawls.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, WAIT, scrapy, scrapy_env

PLUGIN = REPO / "scrapy_fleet"
EXAMPLE = REPO / "fleet_examples"

# what the example may import of the plugin: its public API for spiders and the spider base
# classes (RedisSpider, RedisCrawlSpider: scrapy-redis's, imported as a project imports
# them; settings name the add-on and the pipeline by path, as any project does)
PUBLIC = {"scrapy_fleet.api", "scrapy_fleet.spiders"}

_IMPORT_ALL = r"""
import importlib, importlib.util, json, sys

report = {"importable": importlib.util.find_spec("fleet_examples") is not None, "culprit": None}
for name in json.loads(sys.argv[1]):
    module = importlib.import_module(name)
    assert module.__file__.startswith(sys.argv[2]), module.__file__  # this checkout's
    if any(m == "fleet_examples" or m.startswith("fleet_examples.") for m in sys.modules):
        report["culprit"] = name  # the first module whose import brought it in
        break
print(json.dumps(report))
"""


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.slow
def test_no_plugin_module_imports_the_example_project():
    modules = sorted(module_name(p) for p in PLUGIN.rglob("*.py"))
    assert "scrapy_fleet.commands.fleet" in modules and "scrapy_fleet.spiders" in modules
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, json.dumps(modules), str(PLUGIN)],
        cwd=REPO, env=scrapy_env(), capture_output=True, text=True, timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["importable"]  # it could have been imported: the check means something
    assert report["culprit"] is None


def test_the_example_uses_only_the_plugins_public_api():
    used: dict[str, set[str]] = {}
    for path in EXAMPLE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.split(".")[0] == "scrapy_fleet":
                    used.setdefault(name, set()).add(path.name)
    assert "scrapy_fleet.api" in used  # alexa asks whether it is on the fleet
    assert "scrapy_fleet.spiders" in used  # myspider_redis, mycrawler_redis
    assert set(used) <= PUBLIC, used


@pytest.mark.slow
def test_the_installed_plugin_brings_no_spiders_into_another_project(tmp_path: Path):
    # what setup.py installs: its build_py output, not this checkout
    lib = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
                   cwd=REPO, check=True, capture_output=True, timeout=WAIT)
    assert sorted(p.name for p in lib.iterdir()) == ["scrapy_fleet"]
    assert not list((lib / "scrapy_fleet").rglob("settings.py"))

    project = tmp_path / "project"
    (project / "myproject" / "spiders").mkdir(parents=True)
    (project / "scrapy.cfg").write_text("[settings]\ndefault = myproject.settings\n")
    (project / "myproject" / "__init__.py").write_text("")
    (project / "myproject" / "settings.py").write_text(
        'BOT_NAME = "myproject"\n'
        # the plugin's spiders package too: it holds base classes, never spiders
        'SPIDER_MODULES = ["myproject.spiders", "scrapy_fleet.spiders"]\n'
        'ADDONS = {"scrapy_fleet.addon.FleetAddon": 0}\n'
    )
    (project / "myproject" / "spiders" / "__init__.py").write_text("")
    (project / "myproject" / "spiders" / "mine.py").write_text(
        "import scrapy\n\n\nclass MineSpider(scrapy.Spider):\n    name = 'mine'\n"
    )
    env = {**scrapy_env(), "PYTHONPATH": str(lib)}  # the installed plugin, not the checkout
    listed = scrapy(project, "list", env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert listed.stdout.split() == ["mine"]
    where = subprocess.run(
        [sys.executable, "-c", "import importlib.util, scrapy_fleet; "
         "print(scrapy_fleet.__file__, importlib.util.find_spec('fleet_examples'))"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60,
    )
    assert where.stdout.split() == [str(lib / "scrapy_fleet" / "__init__.py"), "None"]
