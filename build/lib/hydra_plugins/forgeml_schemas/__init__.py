"""Registers forgeml's config schemas whenever Hydra starts (Hydra imports every module under the
`hydra_plugins` namespace package), so conf/ is validated even when DVC composes it."""

from forgeml.config import register_schemas

register_schemas()
