"""Puts the config groups shipped inside forgeml (`pkg://forgeml.conf`) on Hydra's search path.

Hydra discovers this plugin whoever composes: the forgeml CLI, the tests, or DVC's own
composition behind `dvc exp run -S`. The project's conf/ comes first on the path, so a project
option with the same name as one of forgeml's (conf/model/mlp.yaml) wins.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from forgeml.config import PACKAGE_CONFIG


class ForgeSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="forgeml", path=PACKAGE_CONFIG)
