"""What a catalog or an item may make us read or request (the pipeline and ``model.predict``).

A catalog's or item's hrefs (child and item links, asset hrefs) are input, not instructions:

* a local catalog or item (a path or ``file://`` root) may name local files only inside its
  root folder or an allowed folder (``allowed_local_folders``: a dataset catalogued apart from
  its catalog), judged on resolved paths (``..`` and symbolic links followed), and any remote
  href;
* a catalog or item read over the network (a static catalog's URL, a STAC API) may name remote
  hrefs only, never local files, unless ``allow_local_files_from_remote`` (a trusted API that
  serves paths of a shared file system);
* an http(s) request never goes to a host that resolves to a loopback, private, link-local
  or otherwise non-global address (127.0.0.0/8, 10.0.0.0/8, 169.254.169.254, ::1, ...) unless
  ``allow_private_hosts`` (the tests' loopback servers, an intranet mirror).

The options come from the caller (:class:`AccessOptions`: the pipeline's ``pipeline.fetch``
parameters, or ``model.predict``'s command line), and each refusal names the option that allows
it as that caller spells it.

The host is resolved (``socket.getaddrinfo``) just before each request. Two limits remain: a
DNS server that answers differently to the HTTP client's own lookup a moment later (DNS
rebinding), and redirects, which the HTTP clients (obstore, urllib3, requests) follow without
asking us; a network egress policy closes both. A name that does not resolve passes: the
request cannot reach any address through it (a configured proxy resolves it instead).
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname


class AccessOptions(Protocol):
    """What the caller allows beyond the default policy, and how it names each option."""

    allow_private_hosts: bool
    allow_local_files_from_remote: bool
    allowed_local_folders: tuple[str, ...]

    def option_name(self, option: str) -> str:
        """The name the user sets ``option`` (a field name above) by, for messages."""
        ...


class AccessRefused(Exception):
    """An href the policy refuses; ``reason`` says which rule and how to allow it."""

    def __init__(self, reason: str) -> None:
        """Initialize a new AccessRefused instance.

        Args:
            reason: which rule refuses the href, and how to allow it.
        """
        super().__init__(reason)
        self.reason = reason


def is_local(href: str) -> bool:
    """Whether ``href`` names a local file: a plain path or a ``file://`` URL."""
    return urlsplit(href).scheme.lower() in ("", "file")


def local_path(href: str) -> Path:
    """The path of a plain path or ``file://`` href."""
    if href.lower().startswith("file:"):
        return Path(url2pathname(urlsplit(href).path))
    return Path(href)


def check_local_allowed(
    href: str, root: str, policy: AccessOptions, shown: str | None = None
) -> None:
    """Refuse a local ``href`` named by the catalog at ``root`` unless the policy allows it.

    For a local catalog, it must lie inside its root or an allowed folder (resolved paths); for a
    remote one, it is allowed only with the opt-in.

    Args:
        href: the local path or ``file://`` URL to check.
        root: the href of the catalog that names ``href``.
        policy: what the caller allows.
        shown: the href as the catalog wrote it, for the message; ``href`` by default.
    """
    if not is_local(root):
        if not policy.allow_local_files_from_remote:
            raise AccessRefused(
                f"the catalog {root} is read over the network and may not name "
                f"the local file {shown or href!r} (allow with "
                f"{policy.option_name('allow_local_files_from_remote')})"
            )
        return
    target = local_path(href).resolve()
    folders = (root, *policy.allowed_local_folders)
    if not any(target.is_relative_to(local_path(str(f)).resolve()) for f in folders):
        option = policy.option_name("allowed_local_folders")
        also = (
            f" or {option} {list(map(str, policy.allowed_local_folders))}"
            if policy.allowed_local_folders
            else f" (allow its folder with {option})"
        )
        raise AccessRefused(
            f"href {shown or href!r} resolves outside the catalog root {root}{also}"
        )


def check_host(url: str, policy: AccessOptions) -> None:
    """Refuse an http(s) ``url`` whose host resolves to a non-global address.

    Such a URL is allowed with ``policy.allow_private_hosts``.
    """
    parts = urlsplit(url)
    if (
        policy.allow_private_hosts
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
    ):
        return
    try:
        answers = socket.getaddrinfo(parts.hostname, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    for *_, address in answers:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global:
            raise AccessRefused(
                f"host {parts.hostname!r} resolves to {ip}, a loopback, "
                f"private, link-local or reserved address (allow with "
                f"{policy.option_name('allow_private_hosts')})"
            )
