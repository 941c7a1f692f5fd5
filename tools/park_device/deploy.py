"""deploy: put a role's compiled firmware on a board, skipping what is already there.

Every check that can refuse (role, build, .mpy version, provisioned role) runs before
the first byte is written, so a refused deploy leaves the board as it was. Files are
replaced one by one through a rename, and all are re-hashed on the board at the end.
"""
from __future__ import annotations

from .board import Board
from .build import Artifact, build, mpy_cross_version
from .errors import MpyMismatch, VerifyFailed, WrongRole
from .roles import ROLES, check_role

_WALK = r"""
def _pd_walk(root):
    out = []
    def w(d):
        try:
            it = os.ilistdir(d)
        except OSError:
            return
        for e in it:
            p = d + '/' + e[0]
            if e[1] & 0x4000:
                w(p)
            else:
                out.append(p)
    w(root)
    print(json.dumps(out))
"""


def check_mpy(board_mpy: int, cross: tuple[int, int], where: str = "") -> None:
    """Bytecode-only .mpy files load when the major version matches (the sub-version only binds native code)."""
    major = board_mpy & 0xFF
    if major != cross[0]:
        raise MpyMismatch(
            f"the board runs .mpy v{major} but mpy-cross emits v{cross[0]}.{cross[1]}", where=where,
            hint="flash a MicroPython release matching mpy-cross (`park-device flash`) or install the "
                 "mpy-cross that matches the board's firmware")


def plan(arts: list[Artifact], on_board: dict[str, str | None]) -> tuple[list[Artifact], list[Artifact]]:
    """(to upload, unchanged) by comparing sha256 on the board with the build."""
    todo = [a for a in arts if on_board.get(a.dest) != a.sha256]
    same = [a for a in arts if on_board.get(a.dest) == a.sha256]
    return todo, same


def deploy(ui, port: str | None, role: str, *, timeout: float = 10.0, force: bool = False,
           restart: bool = True, fw_root=None, serial_number: str | None = None,
           lines: bool = False) -> tuple[str, dict]:
    check_role(role)
    cross = mpy_cross_version()
    with Board.open(port, timeout=timeout, serial_number=serial_number) as b:
        info = b.info()
        # the board's answers first: an mpy-cross of another release may not even parse today's sources
        check_mpy(info["mpy"], cross, where=b.port)
        cfg = info.get("config") or {}
        have_role = cfg.get("role")
        if have_role and have_role != role and not force:
            raise WrongRole(f"the board is provisioned as {cfg.get('id', '?')} ({have_role}), not {role}",
                            where=b.port, hint=f"deploy --role {have_role}, or re-purpose it with --force "
                                               "and provision it again")
        with ui.progress("compile", 1) as bar:
            def tick(i, n, name):
                bar.total = n
                bar.set(i, name)
            arts = build(role, fw_root=fw_root, progress=tick, lines=lines)
        on_board = b.hashes([a.dest for a in arts])
        todo, same = plan(arts, on_board)

        # Stale modules in our packages (and other roles' packages) would shadow or waste flash.
        b.exec(_WALK)
        wanted = {a.dest for a in arts}
        stale = []
        for pkg in ["protocol", "common", *ROLES]:
            if pkg in ROLES and pkg != role and not force:
                continue
            for p in b.call_json(f"_pd_walk('/lib/{pkg}')"):
                if p not in wanted and (p.endswith(".mpy") or p.endswith(".py") or p.endswith(".part")):
                    stale.append(p)

        total = sum(len(a.data) for a in todo)
        with ui.progress("upload", total) as bar:
            done = 0
            for a in todo:
                base = done
                b.write_file(a.dest, a.data, progress=lambda n, _t, base=base, a=a: bar.set(base + n, a.dest))
                done += len(a.data)
                bar.set(done, a.dest)
        for p in stale:
            b.remove(p)

        after = b.hashes([a.dest for a in arts])
        bad = [a.dest for a in arts if after.get(a.dest) != a.sha256]
        if bad:
            raise VerifyFailed(f"{len(bad)} file(s) differ on the board after upload: {', '.join(bad[:5])}",
                               where=b.port, hint="run deploy again; if it repeats the flash may be failing")
        if restart:
            b.restart()

    result = {
        "role": role, "port": b.port, "files": len(arts), "uploaded": [a.dest for a in todo],
        "unchanged": len(same), "removed": stale, "bytes": total, "verified": len(arts),
        "mpy": f"{cross[0]}.{cross[1]}", "board": {k: info[k] for k in ("platform", "version", "mpy", "machine")},
        "restarted": restart,
    }
    if todo or stale:
        what = f"{len(todo)} of {len(arts)} files uploaded ({total / 1024:.1f} KB), {len(same)} unchanged"
        if stale:
            what += f", {len(stale)} stale removed"
    else:
        what = f"all {len(arts)} files already up to date"
    return f"deploy: {role} on {b.port}: {what}; {len(arts)} verified by sha256", result
