"""The package's own rules, checked on its source: no package imports another's private names.

(The direction of imports between packages is checked by import-linter in `make lint`, from the
contracts in pyproject.toml.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).parents[1] / "src" / "attend"


def _package(module: str) -> str:
    """``attend.runtime.onnx`` -> ``attend.runtime``; a top-level module is its own package."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_module_imports_a_private_name_of_another_package() -> None:
    offences = []
    for path in SOURCE.rglob("*.py"):
        importer = ".".join(("attend", *path.relative_to(SOURCE).with_suffix("").parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attend"):
                private = [alias.name for alias in node.names if alias.name.startswith("_") and alias.name[1] != "_"]
                if private and _package(node.module) != _package(importer):
                    offences.append(f"{importer} imports {private} from {node.module}")
    assert not offences, offences


def test_the_names_the_docs_give_import_from_the_packages_they_name() -> None:
    """docs/architecture.md and the docstrings name these where they were missing from the package."""
    import attend
    from attend.data import DataError, LabelledTexts
    from attend.data.readers import DataError as ReadersError
    from attend.io import ModelDirError
    from attend.runtime import OnnxTextClassifier
    from attend.runtime.onnx import OnnxTextClassifier as OnnxModule
    from attend.serve import TASK_ROUTES, create_app, load_for_serving, serve
    from attend.serve.app import create_app as app_create_app
    from attend.training import fingerprint

    assert attend.DataError is DataError is ReadersError and attend.ModelDirError is ModelDirError
    assert OnnxTextClassifier is OnnxModule and create_app is app_create_app and callable(fingerprint)
    assert "classification" in TASK_ROUTES and callable(serve) and callable(load_for_serving)
    assert LabelledTexts(texts=["a"], labels=[["x"]]).texts == ["a"]
    with pytest.raises(AttributeError, match="module 'attend' has no attribute 'Nothing'"):
        attend.Nothing  # noqa: B018
