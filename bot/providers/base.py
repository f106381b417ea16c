"""The provider protocol and the value types every adapter speaks."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class TaskKind(enum.StrEnum):
    DESCRIBE = "describe"
    IMAGINE = "imagine"


class TaskState(enum.StrEnum):
    """A provider task's state; QUEUED and STARTING are ours, before the provider answered."""

    QUEUED = "QUEUED"
    STARTING = "STARTING"  # ours: the create request is out and its answer not yet saved
    CREATED = "CREATED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def finished(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED)


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What a provider accepts; larger inputs are downscaled and re-encoded to fit."""

    max_side: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class InputImage:
    """Checked image bytes ready to leave for a provider (metadata stripped)."""

    data: bytes
    mime: str


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    data: bytes
    mime: str


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """One observation of a provider task."""

    task_id: str
    state: TaskState
    prompt: str | None = None  # describe: the result text
    image_urls: tuple[str, ...] = ()  # imagine: where the results are, until downloaded
    images: tuple[GeneratedImage, ...] = field(default=(), repr=False)  # imagine: downloaded results


class Provider(Protocol):
    """A remote AI service; adapters raise `ProviderError` and return typed snapshots."""

    name: str
    kinds: frozenset[TaskKind]
    image_limits: ImageLimits
    is_synchronous: bool  # its start returns a finished snapshot; there is nothing to poll

    async def start_describe(self, image: InputImage, *, webhook_url: str | None) -> TaskSnapshot:
        """Create an image-to-prompt task."""
        ...

    async def start_imagine(
        self, prompt: str, references: list[InputImage], *, webhook_url: str | None
    ) -> TaskSnapshot:
        """Create an image generation task."""
        ...

    async def poll(self, kind: TaskKind, task_id: str) -> TaskSnapshot:
        """Read a task's current state."""
        ...

    async def fetch_results(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        """Download what a COMPLETED imagine snapshot points at (provider URLs expire)."""
        ...

    def snapshot_from_webhook(self, kind: TaskKind, payload: Mapping[str, object]) -> TaskSnapshot:
        """Read a webhook delivery's task object; raise ProviderError when it has the wrong shape."""
        ...

    async def check_key(self) -> None:
        """Prove the key works with the cheapest call there is; raise ProviderError if not."""
        ...
