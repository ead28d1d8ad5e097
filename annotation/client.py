"""A thin wrapper over label-studio-sdk 2.x with the few calls QC needs.

Why a wrapper: every way the server can fail (down, wrong key, wrong URL) becomes one
:class:`UserError` line instead of an httpx traceback. Nothing here knows about
shards; :mod:`videor4.annotation.labeling` builds tasks and
:mod:`videor4.annotation.verdicts` reads annotations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from videor4.contracts.errors import UserError

T = TypeVar("T")


class LabelStudioUnavailable(UserError):
    """The server cannot be reached (down, wrong URL): the CLI prints one line and exits 2."""


@dataclass
class TaskReview:
    """One task as pulled: its sample, the annotators' results and the evidence boxes we pre-annotated."""

    task_id: int
    sample_id: str
    annotations: list[dict[str, Any]]
    prediction_results: list[list[dict[str, Any]]] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)  # video frame of each image in the task's frame list


def _translated(fn: Callable[[], T], what: str, url: str) -> T:
    """Run one SDK call; its failures become one-line UserErrors.

    Connection errors are already retried inside the SDK (``max_retries``, exponential backoff), and a whole
    import batch is retried again by its Prefect task; retrying here too would only multiply the wait.
    """
    try:
        return fn()
    except (httpx.TransportError, ConnectionError) as exc:
        raise LabelStudioUnavailable(
            f"Label Studio is not reachable at {url} while trying to {what} ({type(exc).__name__}); "
            "start it with `videor4 qc serve` or pass --url") from exc
    except ApiError as exc:
        if exc.status_code in (401, 403):
            raise UserError(f"Label Studio at {url} rejected the API key (HTTP {exc.status_code}); "
                            "pass --api-key or set VIDEOR4_LS_TOKEN") from exc
        raise UserError(f"Label Studio at {url} refused to {what}: HTTP {exc.status_code} "
                        f"{str(exc.body)[:200]}") from exc


class QCClient:
    """Connected client for one Label Studio server."""

    def __init__(self, url: str, api_key: str, *, timeout_s: float = 60.0, max_retries: int = 2) -> None:
        self.url = url.rstrip("/")
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        return _translated(fn, what, self.url)

    @classmethod
    def connect(cls, url: str, api_key: str | None, *, timeout_s: float = 60.0) -> QCClient:
        """Connect and prove the key works (one ``whoami``), so later steps fail for real reasons only."""
        if not api_key:
            raise UserError("no Label Studio API key: pass --api-key or set VIDEOR4_LS_TOKEN")
        client = cls(url, api_key, timeout_s=timeout_s)
        client.call("check the API key", client.sdk.users.whoami)
        return client

    # -- projects and storage ------------------------------------------------------------------------------------
    def project_by_title(self, title: str) -> int | None:
        found = self.call("list projects", lambda: list(self.sdk.projects.list(title=title)))
        ids = sorted(p.id for p in found if p.title == title)
        return ids[0] if ids else None

    def ensure_project(self, title: str, label_config: str, description: str = "") -> int:
        """The project with this title, created if missing and its labeling config kept current."""
        pid = self.project_by_title(title)
        if pid is None:
            created = self.call("create the project", lambda: self.sdk.projects.create(
                title=title, label_config=label_config, description=description, show_skip_button=True))
            return int(created.id)
        current = self.call("read the project", lambda: self.sdk.projects.get(pid))
        if (current.label_config or "").strip() != label_config.strip():
            self.call("update the labeling config",
                      lambda: self.sdk.projects.update(pid, label_config=label_config))
        return pid

    def ensure_local_storage(self, project_id: int, path: str, title: str = "videor4 qc_media") -> int:
        """A local-files import storage on ``path``: without one, ``/data/local-files/?d=`` answers 404/403."""
        existing = self.call("list storages", lambda: self.sdk.import_storage.local.list(project=project_id))
        for storage in existing:
            if storage.path == path:
                return int(storage.id)
        created = self.call("create the local-files storage", lambda: self.sdk.import_storage.local.create(
            project=project_id, path=path, title=title, use_blob_urls=False))
        return int(created.id)

    # -- tasks --------------------------------------------------------------------------------------------------
    def iter_tasks(self, project_id: int, *, with_annotations: bool) -> Iterator[Any]:
        fields = "all" if with_annotations else "task_only"
        pager = self.call("list tasks", lambda: self.sdk.tasks.list(project=project_id, fields=fields,
                                                                        page_size=500))
        yield from pager

    def task_ids_by_sample(self, project_id: int) -> dict[str, int]:
        """``sample_id -> task_id`` of the project's tasks: what makes a re-push skip what is already there."""
        out: dict[str, int] = {}
        for task in self.call("list tasks", lambda: list(self.iter_tasks(project_id, with_annotations=False))):
            sid = (task.data or {}).get("sample_id")
            if sid:
                out.setdefault(str(sid), int(task.id))
        return out

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        result = self.call("import tasks", lambda: self.sdk.projects.import_tasks(
            project_id, request=list(tasks), return_task_ids=True, commit_to_project=True))
        return list(result.task_ids or [])

    def fetch_reviews(self, project_id: int) -> list[TaskReview]:
        """Every task's annotations and prediction results.

        The JSON export lists predictions by id only; the task list with ``fields=all`` carries their
        content, so one paginated listing is enough (a task without any falls back to a per-task fetch).
        """
        reviews = []
        for task in self.call("fetch annotations", lambda: list(self.iter_tasks(project_id, with_annotations=True))):
            sid = (task.data or {}).get("sample_id")
            if not sid:
                continue
            preds = [p.result for p in (task.predictions or []) if getattr(p, "result", None) is not None]
            if not preds and (task.total_predictions or 0) > 0:
                preds = [p.result for p in self.call("fetch predictions",
                                                     lambda: self.sdk.predictions.list(task=task.id))]
            anns = [a if isinstance(a, dict) else a.model_dump() for a in (task.annotations or [])]
            frames = [int(f) for f in (task.data.get("frame_indices") or [])]
            reviews.append(TaskReview(int(task.id), str(sid), anns, preds, frames))
        return reviews

    def user_emails(self) -> dict[int, str]:
        users = self.call("list users", lambda: list(self.sdk.users.list()))
        return {int(u.id): (u.email or u.username or str(u.id)) for u in users}

    def task_count(self, project_id: int) -> int:
        return len(self.task_ids_by_sample(project_id))
