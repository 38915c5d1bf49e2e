"""Importers turning public dataset layouts into make_shards manifest rows."""

from data_pipelines.importers.audiocaps import import_audiocaps
from data_pipelines.importers.clotho import import_clotho
from data_pipelines.importers.esc50 import import_esc50
from data_pipelines.importers.tags import import_tags

__all__ = ["import_audiocaps", "import_clotho", "import_esc50", "import_tags"]
