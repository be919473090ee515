"""Handing a file to the proxy in front: ``X-Accel-Redirect`` (nginx, Caddy) or ``X-Sendfile``.

With ``SENDFILE_HEADER`` set, ``/images`` makes every decision itself (404/410, the ETag and
304, the caching and type headers) and, where it would send a local file, answers with an empty
body and one header naming that file; the proxy sends the bytes (and answers ranges itself).

- ``X-Accel-Redirect``: ``SENDFILE_PREFIX`` (an ``internal`` nginx location such as
  ``/_picgate_files/``) followed by the file's path relative to ``IMAGES_DIR``, each part
  percent-quoted.
- ``X-Sendfile``: the absolute path of the file; ``SENDFILE_PREFIX``, when set, is the folder
  where the proxy sees ``IMAGES_DIR`` (another container, another mount) and replaces it.

Only a file inside ``IMAGES_DIR`` is ever named: ``target`` refuses any other path, whatever
its ``..`` parts say. The paths it is given are built from validated ids and names
(``LocalCache.path``, ``LocalCache.variant_path``), so a refusal means a bug, not bad input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from picgate.config import Settings

ACCEL = "X-Accel-Redirect"
SENDFILE = "X-Sendfile"


class OutsideImagesDir(ValueError):
    """A path that is not inside ``IMAGES_DIR`` was about to be named to the proxy."""


@dataclass(frozen=True)
class Sendfile:
    header: str  # ACCEL or SENDFILE
    prefix: str  # the URI prefix (ACCEL) or the folder the proxy sees (SENDFILE)
    root: str  # IMAGES_DIR, absolute and normalized

    @classmethod
    def from_settings(cls, settings: Settings) -> Sendfile | None:
        """The handoff the (validated) settings ask for; None when ``SENDFILE_HEADER`` is
        empty."""
        header = settings.sendfile_header.strip()
        if not header:
            return None
        root = os.path.normpath(os.path.abspath(settings.resolved_images_dir))
        prefix = settings.sendfile_prefix.strip()
        if header.lower() == ACCEL.lower():
            return cls(ACCEL, prefix, root)
        return cls(SENDFILE, os.path.normpath(prefix) if prefix else root, root)

    def relative_parts(self, path: Path) -> tuple[str, ...]:
        """The parts of ``path`` below ``IMAGES_DIR``; OutsideImagesDir for any other path."""
        full = os.path.normpath(os.path.abspath(path))
        try:
            inside = os.path.commonpath([self.root, full]) == self.root
        except ValueError:  # one relative, one absolute, or different drives
            inside = False
        rel = os.path.relpath(full, self.root) if inside else ""
        parts = tuple(rel.split(os.sep)) if rel else ()
        if not parts or rel == os.curdir or any(p in ("", os.curdir, os.pardir) for p in parts):
            raise OutsideImagesDir(f"{path} is not a file inside IMAGES_DIR")
        return parts

    def target(self, path: Path) -> str:
        """The header's value naming ``path`` (see the module docstring)."""
        parts = self.relative_parts(path)
        if self.header == ACCEL:
            return self.prefix + "/".join(quote(p, safe="") for p in parts)
        return os.path.join(self.prefix, *parts)

    def headers(self, path: Path) -> dict[str, str]:
        return {self.header: self.target(path)}
