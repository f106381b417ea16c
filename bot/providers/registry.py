"""Every provider the bot knows, in preference order: settings, checks, choices and words follow from here.

Adding a provider is one module beside this one (its settings section, adapter and `SPEC`) and one line
below; its fake and its tests go under tests/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.domain.ports import Provider
from bot.providers import freepik, novita, openai_compatible
from bot.providers.spec import BuildContext, ProviderSettings, ProviderSpec

# The order is the preference: the default image-to-prompt provider is the first configured one.
PROVIDERS: tuple[ProviderSpec[Any], ...] = (
    freepik.SPEC,
    novita.SPEC,
    openai_compatible.SPEC,
)

BY_NAME: Mapping[str, ProviderSpec[Any]] = {spec.name: spec for spec in PROVIDERS}


def build_providers(sections: Mapping[str, ProviderSettings], context: BuildContext) -> dict[str, Provider]:
    """Return the configured providers by name, in preference order."""
    return {
        spec.name: spec.build(sections[spec.name], context)
        for spec in PROVIDERS
        if sections[spec.name].configured
    }


def labels(sections: Mapping[str, ProviderSettings]) -> dict[str, str]:
    """Return the name members see for every provider, configured or not (old jobs may name any)."""
    return {spec.name: spec.display_name(sections[spec.name]) for spec in PROVIDERS}
