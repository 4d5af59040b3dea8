"""The dependency runs one way: the miniature world plugs into the core through the core's registries.

No module outside ``infinite_id/world/`` imports the world, production code never imports ``infinite_id.testing``,
and a backend or default model that is declared but missing (a trimmed install) is "unavailable", not a crash.
"""

from __future__ import annotations

import ast
from importlib import metadata
from pathlib import Path

import pytest

import infinite_id
from infinite_id import defaults
from infinite_id.faces import BackendUnavailableError, FaceAnalyzer, FaceEncoderInfo, factory, get_face_analyzer
from infinite_id.plugins import PluginLoadError, PluginRegistry

PACKAGE = Path(infinite_id.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved, at any depth of the file (lazy imports too)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import world`
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
    return found


def _core_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "world" not in p.relative_to(PACKAGE).parts[:1]]


def test_the_walk_sees_relative_and_lazy_imports():
    assert "infinite_id.faces.base" in _imports(PACKAGE / "defaults.py")
    assert "infinite_id.smoke_model" in _imports(PACKAGE / "defaults.py")  # a lazy import inside a function
    assert "infinite_id.plugins" in _imports(PACKAGE / "faces" / "factory.py")  # two dots up


@pytest.mark.world
def test_the_world_plugs_in_through_the_registries():
    assert "infinite_id.defaults" in _imports(PACKAGE / "world" / "default_model.py")  # world -> core, not back
    assert "mini" in factory.face_backend_names(photos_only=True)
    assert defaults.default_model_provider("miniature").face_backend == "mini"


def test_no_module_outside_the_world_imports_it():
    offenders = {
        _module_name(path): sorted(
            i for i in _imports(path) if i == "infinite_id.world" or i.startswith("infinite_id.world.")
        )
        for path in _core_modules()
    }
    offenders = {module: found for module, found in offenders.items() if found}
    assert len(_core_modules()) > 50 and not offenders, f"the core imports the miniature world: {offenders}"


def test_production_code_never_imports_the_test_models():
    offenders = [
        _module_name(path)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "testing.py" and any(i.startswith("infinite_id.testing") for i in _imports(path))
    ]
    assert not offenders, f"production modules import infinite_id.testing: {offenders}"


class _EchoAnalyzer(FaceAnalyzer):
    """A third-party backend: it only has to be a FaceAnalyzer."""

    backend_name = "echo"

    def __init__(self, dim: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim = dim

    @property
    def info(self) -> FaceEncoderInfo:
        return FaceEncoderInfo(backend="echo", model="echo-v1", dim=self.dim)

    def _detect(self, image):
        return []

    def _embed(self, image, face):
        raise NotImplementedError


@pytest.fixture
def echo_backend():
    factory.register_face_backend("echo", _EchoAnalyzer)
    yield
    factory.FACE_BACKEND_REGISTRY.unregister("echo")


def test_a_registered_backend_is_built_by_name_and_offered_by_the_cli(echo_backend):
    from typer.testing import CliRunner

    from infinite_id.cli import app

    analyzer = get_face_analyzer("echo", dim=4)
    assert isinstance(analyzer, _EchoAnalyzer) and analyzer.info.dim == 4
    assert "echo" in factory.face_backend_names(photos_only=True)
    assert "precomputed" in factory.face_backend_names() and "precomputed" not in factory.face_backend_names(True)
    ref = str(PACKAGE.parent / "examples" / "portraits" / "woman_1.png")
    result = CliRunner().invoke(app, ["generate", "--ref", ref, "--prompt", "p", "--face-backend", "nope"])
    assert result.exit_code != 0 and "echo" in result.output  # the choices listed are the registry's


def test_a_declared_but_missing_plugin_is_unavailable_not_a_crash(monkeypatch):
    missing = metadata.EntryPoint(
        name="gone", value="no_such_plugin_module:Analyzer", group=factory.FACE_BACKEND_GROUP
    )
    registry: PluginRegistry = PluginRegistry(factory.FACE_BACKEND_GROUP, "face backend")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [missing] if group == registry.group else [])
    assert registry.names() == ("gone",)  # listed without importing anything
    with pytest.raises(PluginLoadError, match="no_such_plugin_module"):
        registry.get("gone")
    monkeypatch.setattr(factory, "FACE_BACKEND_REGISTRY", registry)
    with pytest.raises(BackendUnavailableError, match="gone"):
        get_face_analyzer("gone")


class _Provider:
    name = "plugged"
    description = "a plugged-in default model"
    face_backend = "echo"

    def __init__(self, available: bool) -> None:
        self._available = available

    def available(self) -> bool:
        return self._available

    def load(self, device="cpu", dtype=None, **options):
        return "model", FaceEncoderInfo(backend="echo", model="echo-v1", dim=8)


def test_the_default_model_is_the_first_available_registered_provider(monkeypatch):
    registry: PluginRegistry = PluginRegistry(defaults.DEFAULT_MODEL_GROUP, "default model")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [])
    monkeypatch.setattr(defaults, "DEFAULT_MODELS", registry)
    assert defaults.default_model_provider() is None and defaults.default_face_backend() == "auto"
    assert "smoke model" in defaults.default_model_description()
    defaults.register_default_model(_Provider(available=False))
    assert not defaults.default_model_available()  # registered, but its weights are not here
    defaults.register_default_model(_Provider(available=True))
    assert defaults.default_model_description() == "a plugged-in default model"
    assert defaults.default_face_backend() == "echo"
    assert defaults.resolve_default_model()[0] == "model"
    with pytest.raises(TypeError, match="default model"):
        defaults.register_default_model(object())  # type: ignore[arg-type]
