"""What the operating system must allow before the daemon starts: one list of checks for both callers.

`park-gateway config check` and the daemon's start run the same `check(cfg)`,
so a config that passes the check also starts (issue 9.7). Each problem names
the config file and the dotted key it comes from; the daemon refuses to start
on the first one instead of dying half-way with a traceback (and a stale socket).
Run the check as the user the daemon runs as (`sudo -u park-gateway ...`):
permissions are that user's.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass

from gateway.config import Config, ConfigError

__all__ = ["PreflightError", "Problem", "SOCKET_PATH_MAX", "check", "problems"]

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL
SOCKET_PATH_MAX = 107


class PreflightError(ConfigError):
    """The system refuses what the config asks for; `key` names the setting, `file` the config."""


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    fatal: bool = True  # False: a warning the daemon survives

    def error(self, cfg: Config) -> PreflightError:
        return PreflightError(self.message, self.key, cfg.path)


def check(cfg: Config, starting: bool = True) -> list[Problem]:
    """Raise PreflightError for the first fatal problem; return the warnings.

    Before a start (`starting`) every problem is fatal; `config check` only
    warns about a directory systemd creates for the service when it starts.
    """
    found = problems(cfg)
    for p in found:
        if p.fatal or starting:
            raise p.error(cfg)
    return found


def problems(cfg: Config) -> list[Problem]:
    out: list[Problem] = []
    out += _state_dir(cfg.state_dir)
    out += _socket(cfg.api_socket, cfg.api_group)
    out += _group(cfg.api_group)
    return out


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "uid %d" % os.geteuid()


def _blocked(path: str) -> tuple[str | None, str | None]:
    """(a parent of `path` that is not a directory, the nearest existing ancestor)."""
    p = os.path.abspath(path)
    parts = []
    while True:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            parts.append(p)
            parent = os.path.dirname(p)
            if parent == p:
                return None, None
            p = parent
            continue
        except NotADirectoryError:
            parts.append(p)
            p = os.path.dirname(p)
            continue
        except PermissionError:
            return None, p
        if not stat.S_ISDIR(st.st_mode):
            return p, None
        return None, p


def _directory(key: str, path: str, what: str, create_hint: str = "") -> list[Problem]:
    blocked, existing = _blocked(path)
    if blocked is not None:
        return [Problem(key, "%s %s cannot be created: %s is a file, not a directory" % (what, path, blocked))]
    if existing is None:
        return []
    if existing == os.path.abspath(path):
        if not os.access(path, os.W_OK | os.X_OK):
            return [Problem(key, "%s %s is not writable by %s" % (what, path, _user()))]
        return []
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Problem(key, "%s %s does not exist and %s cannot create it in %s%s"
                        % (what, path, _user(), existing, create_hint), fatal=not create_hint)]
    return []


def _state_dir(path: str) -> list[Problem]:
    key = "gateway.state_dir"
    out = _directory(key, path, "state_dir", " (systemd's StateDirectory= creates it)")
    if out or not os.path.isdir(path):
        return out
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o007:
        out.append(Problem(key, "state_dir %s holds device keys but is open to others (mode %o); chmod 700 it"
                           % (path, mode)))
    for name in ("registry.sqlite",):  # the device keys; the outbox and request log hold no secret
        f = os.path.join(path, name)
        try:
            st = os.stat(f)
        except FileNotFoundError:
            continue
        except OSError as e:
            out.append(Problem(key, "%s: %s" % (f, e.strerror)))
            continue
        if not stat.S_ISREG(st.st_mode):
            out.append(Problem(key, "%s is not a regular file" % f))
        elif st.st_mode & 0o077:
            out.append(Problem(key, "%s is readable by others (mode %o); chmod 600 it" % (f, stat.S_IMODE(st.st_mode))))
        elif not os.access(f, os.R_OK | os.W_OK):
            out.append(Problem(key, "%s is not readable and writable by %s" % (f, _user())))
    return out


def _socket(path: str, group: str) -> list[Problem]:
    key = "gateway.api_socket"
    n = len(os.fsencode(os.path.abspath(path)))
    if n > SOCKET_PATH_MAX:
        return [Problem(key, "%s is %d bytes long; a Unix socket path may have at most %d (108 with the NUL)"
                        % (path, n, SOCKET_PATH_MAX))]
    d = os.path.dirname(os.path.abspath(path))
    out = _directory(key, d, "the socket's directory", " (systemd's RuntimeDirectory= creates it)")
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        out.append(Problem(key, "%s exists and is not a socket; the daemon will not replace it" % path))
    return out


def _group(group: str) -> list[Problem]:
    if not group:
        return []
    key = "gateway.api_group"
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return [Problem(key, "group %r does not exist (create it: groupadd --system %s)" % (group, group))]
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        return [Problem(key, "%s is not a member of group %r, so it cannot hand the socket to that group "
                             "(usermod -aG %s %s, then restart the service)" % (_user(), group, group, _user()))]
    return []
