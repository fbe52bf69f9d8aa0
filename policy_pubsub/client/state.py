"""The state file: the last snapshot the component applied, kept across restarts.

It is replaced atomically (a temporary file in the same directory, written and fsync'd, then
renamed over the old one, and the directory fsync'd), so after a crash it holds either the
previous applied snapshot or the new one, never a mix. It only ever records snapshots the
component said it applied.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from policy_pubsub.client.changes import Snapshot, valid_policies
from policy_pubsub.exceptions import StateFileError

FORMAT = "policy-pubsub-state/1"


class StateFile:
    """One subscriber's state file at ``path``."""

    def __init__(self, path: str | os.PathLike[str], subscriber_id: str) -> None:
        self.path = Path(path)
        self.subscriber_id = subscriber_id

    def load(self) -> Snapshot | None:
        """The applied snapshot it records; None when the file does not exist (a first run).
        ``StateFileError`` when it cannot be read or is not this subscriber's state file.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(f"cannot be read ({exc.strerror or exc})") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise self._error(f"is not JSON ({exc}); delete it to start afresh") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise self._error(f"is not a {FORMAT} file; delete it to start afresh")
        if data.get("subscriber_id") != self.subscriber_id:
            raise self._error(
                f"belongs to subscriber {data.get('subscriber_id')!r}, "
                f"not {self.subscriber_id!r}: give each subscriber its own state file"
            )
        revision = data.get("revision")
        policies = valid_policies(data.get("policies"))
        if not isinstance(revision, int) or isinstance(revision, bool) or policies is None:
            raise self._error("has no valid revision and policies; delete it to start afresh")
        event = data.get("event")
        return Snapshot(revision, policies, event if isinstance(event, str) else "update")

    def save(self, snapshot: Snapshot) -> None:
        """Record ``snapshot`` as applied, atomically and durably."""
        record: dict[str, Any] = {
            "format": FORMAT,
            "subscriber_id": self.subscriber_id,
            "revision": snapshot.revision,
            "event": snapshot.event,
            "saved_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "policies": snapshot.policies,
        }
        data = json.dumps(record, indent=1, sort_keys=True).encode()
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(
                dir=directory, prefix=f".{self.path.name}.", suffix=".tmp"
            )
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            _fsync_directory(directory)
        except OSError as exc:
            raise self._error(f"cannot be written ({exc.strerror or exc})") from exc

    def _error(self, reason: str) -> StateFileError:
        return StateFileError(str(self.path), reason)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
