"""Provision and run a software TPM (swtpm) in a directory of its own, for tests and the demo.

``swtpm_setup`` manufactures the TPM state with RSA and ECC endorsement keys and their
certificates, signed by a local CA whose configuration and keys live in the same directory (never
/var/lib). ``swtpm`` then serves it on a unix socket in that directory; the TCTI string is
``swtpm:path=<dir>/sock``. The ``swtpm/`` scripts of the source tree call this module.

A swtpm started from Python is this process's child and ends with it: ``with Swtpm(dir) as
tpm:`` stops it when the block ends, an exception included, and the kernel sends it SIGTERM
when the thread that started it dies, however it dies (SIGKILL too: Linux's
``PR_SET_PDEATHSIG``), so a crashed script leaves no daemon. Only ``start(detach=True)`` (the
``swtpm/start`` script) leaves one running after this process, until ``stop``.

``Tabrmd`` puts tpm2-abrmd (the user-space resource manager) in front of one, on a private
D-Bus session bus of its own, so several processes share the TPM as they would /dev/tpmrm0.

Usage: ``python -m entra_keys.testing.swtpm {provision,start,stop,tcti} DIR``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = [
    "Swtpm",
    "SwtpmError",
    "Tabrmd",
    "swtpm_available",
    "swtpm_unusable_reason",
    "tabrmd_available",
]

_TOOLS = ("swtpm", "swtpm_setup", "swtpm_localca")
#: prctl(2) option: the signal the kernel sends a process when the thread that forked it dies.
_PR_SET_PDEATHSIG = 1


class SwtpmError(RuntimeError):
    """swtpm is missing, could not be provisioned, or did not start."""


def swtpm_available() -> bool:
    """True when the swtpm, swtpm_setup and swtpm_localca programs are installed."""
    return all(shutil.which(tool) for tool in _TOOLS)


def swtpm_unusable_reason() -> str | None:
    """None when a swtpm can be started here and the TPM provider can use it; else why not:
    swtpm is not installed, or tpm2-pytss (the ``tpm`` extra) cannot be imported."""
    if not swtpm_available():
        return "swtpm is not installed (Debian: apt-get install swtpm swtpm-tools)"
    from ..errors import HardwareUnavailable
    from ..providers.tpm._connection import import_pytss

    try:
        import_pytss()
    except HardwareUnavailable as exc:
        return str(exc)
    return None


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once (before any fork), or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


def _dies_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when ``parent``'s forking thread dies
    (Linux ``PR_SET_PDEATHSIG``), and end at once if the parent died before it was set."""
    prctl = _prctl()
    if prctl is None:
        return None

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_parent


class Swtpm:
    """One software TPM: its state, CA and socket under ``directory``.

    A context manager: ``with Swtpm(dir) as tpm:`` starts it (provisioning it first if needed)
    and stops it when the block ends, if it started it.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).absolute()
        self.state_dir = self.directory / "tpm"
        self.ca_dir = self.directory / "ca"
        self.socket = self.directory / "sock"
        self.pid_file = self.directory / "swtpm.pid"
        self.log_file = self.directory / "swtpm.log"
        self._process: subprocess.Popen[bytes] | None = None  # the swtpm this object started
        self._started_here = False

    def __enter__(self) -> Swtpm:
        self._started_here = not self.running()
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._started_here:
            self.stop()

    @property
    def tcti(self) -> str:
        """The TCTI string for tpm2-tss and tpm2-tools."""
        return f"swtpm:path={self.socket}"

    @property
    def ca_certificates(self) -> list[Path]:
        """The local CA's root and issuer certificates, which the EK certificates chain to."""
        return [
            self.ca_dir / "swtpm-localca-rootca-cert.pem",
            self.ca_dir / "issuercert.pem",
        ]

    @property
    def provisioned(self) -> bool:
        """True once swtpm_setup has written the TPM state."""
        return (self.state_dir / "tpm2-00.permall").exists()

    def provision(self, *, platform_cert: bool = True) -> None:
        """Manufacture the TPM: EKs with certificates from the local CA (and a platform cert)."""
        if not swtpm_available():
            raise SwtpmError("swtpm is not installed (Debian: apt-get install swtpm swtpm-tools)")
        for d in (self.directory, self.state_dir, self.ca_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        conf = self.directory / "swtpm_setup.conf"
        ca_conf = self.directory / "swtpm-localca.conf"
        ca_opts = self.directory / "swtpm-localca.options"
        conf.write_text(
            f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
            f"create_certs_tool_config = {ca_conf}\n"
            f"create_certs_tool_options = {ca_opts}\n"
            "active_pcr_banks = sha256,sha1\n"
        )
        ca_conf.write_text(
            f"statedir = {self.ca_dir}\n"
            f"signingkey = {self.ca_dir / 'signkey.pem'}\n"
            f"issuercert = {self.ca_dir / 'issuercert.pem'}\n"
            f"certserial = {self.ca_dir / 'certserial'}\n"
        )
        ca_opts.write_text(
            "--platform-manufacturer entra_keys\n--platform-version 2.1\n--platform-model swtpm\n"
        )
        cmd = [
            "swtpm_setup", "--tpm2", "--tpmstate", str(self.state_dir),
            "--create-ek-cert", "--config", str(conf), "--overwrite",
            "--logfile", str(self.directory / "swtpm_setup.log"),
        ]  # fmt: skip
        if platform_cert:
            cmd.append("--create-platform-cert")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0 or not self.provisioned:
            log = (self.directory / "swtpm_setup.log").read_text(errors="replace")[-2000:]
            raise SwtpmError(f"swtpm_setup failed ({done.returncode}): {done.stderr}{log}")

    def start(self, timeout: float = 10.0, *, startup: bool = True, detach: bool = False) -> str:
        """Start swtpm on the unix socket (provisioning first if needed); returns the TCTI.
        It sends itself TPM2_Startup(CLEAR), as firmware does at boot; without ``startup`` the
        TPM waits for one (every other command is TPM_RC_INITIALIZE).

        The swtpm is a child of this process and gets SIGTERM when the calling thread dies
        (start it from a thread that outlives its use, such as the main thread); with
        ``detach`` it is a daemon of its own that outlives this process, until ``stop``."""
        if not self.provisioned:
            self.provision()
        if self.running():
            return self.tcti
        self.socket.unlink(missing_ok=True)
        cmd = [
            "swtpm", "socket", "--tpm2",
            "--tpmstate", f"dir={self.state_dir}",
            "--server", f"type=unixio,path={self.socket}",
            "--ctrl", f"type=unixio,path={self.socket}.ctrl",
            "--flags", "not-need-init,startup-clear" if startup else "not-need-init",
            "--pid", f"file={self.pid_file}",
            "--log", f"file={self.log_file},level=1",
        ]  # fmt: skip
        if detach:
            done = subprocess.run(
                [*cmd, "--daemon"], capture_output=True, text=True, timeout=timeout, check=False
            )
            if done.returncode != 0:
                raise SwtpmError(f"swtpm did not start ({done.returncode}): {done.stderr.strip()}")
        else:
            self._spawn(cmd)
        deadline = time.monotonic() + timeout
        while not self.socket.exists() or self.pid() is None:
            if self._process is not None and self._process.poll() is not None:
                error = (self.directory / "swtpm.err").read_text(errors="replace").strip()
                self._process = None
                raise SwtpmError(f"swtpm did not start: {error[-1000:]}")
            if time.monotonic() > deadline:
                raise SwtpmError(f"swtpm started but {self.socket} did not appear")
            time.sleep(0.01)
        return self.tcti

    def _spawn(self, cmd: list[str]) -> None:
        """Start swtpm in the foreground as this thread's child, tied to it (PDEATHSIG)."""
        self.pid_file.unlink(missing_ok=True)
        with (self.directory / "swtpm.err").open("wb") as errors:
            self._process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=errors,
                stderr=errors,
                preexec_fn=_dies_with(os.getpid()),
            )

    def _reap(self) -> None:
        """Collect the exit status of the swtpm this object started, once it has ended."""
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            self._process = None

    def restart(self, *, startup: bool = True) -> str:
        """Stop swtpm and start it again on the same state: a reboot (TPM2_Startup(CLEAR)
        after no TPM2_Shutdown, so a TPM reset: every transient object and session is gone,
        persistent keys and seeds stay). Clients' connections break."""
        self.stop()
        return self.start(startup=startup)

    def pid(self) -> int | None:
        """The running swtpm's process id, or None."""
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        """True when the swtpm process of this directory is alive."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # a killed process waiting to be reaped is not running
            return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
        except (OSError, IndexError):
            return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop swtpm (SIGTERM, then SIGKILL after the timeout); the state stays on disk."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)

    def kill(self) -> None:
        """Kill swtpm at once (SIGKILL), as a crash or a pulled TPM would."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while self.running():
                time.sleep(0.01)
        self._reap()
        self.pid_file.unlink(missing_ok=True)


def tabrmd_available() -> bool:
    """True when tpm2-abrmd, dbus-daemon, the tabrmd TCTI (libtss2-tcti-tabrmd0) and
    tpm2_getrandom (tpm2-tools, which tells when tabrmd answers) are there."""
    import ctypes.util

    tools = all(shutil.which(t) for t in ("tpm2-abrmd", "dbus-daemon", "tpm2_getrandom"))
    return bool(tools) and ctypes.util.find_library("tss2-tcti-tabrmd") is not None


class Tabrmd:
    """tpm2-abrmd in front of a running swtpm, on a private D-Bus session bus (a dbus-daemon
    of its own, so no system bus is needed). Clients need ``bus_address`` in their
    DBUS_SESSION_BUS_ADDRESS and ``tcti`` as their TCTI. The swtpm serves one connection at a
    time: while tabrmd runs, every client must go through it.

    ``capture``: tpm2-abrmd talks to the swtpm through tpm2-tss's pcap TCTI, which writes every
    command the TPM receives to that file (its context swaps too: ``testing.pcap`` reads it).
    ``max_transients``: tpm2-abrmd's ``--max-transients`` (it admits one object more than the
    number given, so 2 gives the three a process may hold behind the kernel's /dev/tpmrm0).
    """

    def __init__(
        self, tpm: Swtpm, *, capture: Path | None = None, max_transients: int | None = None
    ) -> None:
        self.tpm = tpm
        self.capture = capture
        self.max_transients = max_transients
        self.directory = tpm.directory / "tabrmd"
        self.bus_socket = self.directory / "bus"
        self.dbus_name = f"com.intel.tss2.Tabrmd.entra{os.getpid()}"
        self.log_file = self.directory / "tabrmd.log"
        self._dbus_pid: int | None = None
        self._daemon: subprocess.Popen[bytes] | None = None

    @property
    def bus_address(self) -> str:
        """The D-Bus address of the private session bus."""
        return f"unix:path={self.bus_socket}"

    @property
    def tcti(self) -> str:
        """The TCTI string of a tabrmd client on that bus."""
        return f"tabrmd:bus_type=session,bus_name={self.dbus_name}"

    def start(self, timeout: float = 15.0) -> str:
        """Start the bus and tpm2-abrmd on the swtpm's socket (starting it if needed); waits
        until a client gets an answer through it, and returns the TCTI."""
        if not tabrmd_available():
            raise SwtpmError(
                "tpm2-abrmd is not installed (Debian: apt-get install tpm2-abrmd "
                "libtss2-tcti-tabrmd0 dbus-daemon)"
            )
        self.tpm.start()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.bus_socket.unlink(missing_ok=True)
        done = subprocess.run(
            ["dbus-daemon", "--session", "--fork", "--nopidfile", "--print-pid=1",
             f"--address={self.bus_address}"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SwtpmError(f"dbus-daemon did not start: {done.stderr.strip()}")
        self._dbus_pid = int(done.stdout.split()[0])
        tcti = self.tpm.tcti if self.capture is None else f"pcap:{self.tpm.tcti}"
        cmd = ["tpm2-abrmd", "--session", f"--dbus-name={self.dbus_name}", f"--tcti={tcti}"]
        if self.max_transients is not None:
            cmd.append(f"--max-transients={self.max_transients}")
        if os.geteuid() == 0:  # CI runs as root; tabrmd refuses to unless told
            cmd.append("--allow-root")
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": self.bus_address}
        env.pop("TCTI_PCAP_FILE", None)  # the caller's capture is not the daemon's
        daemon_env = env if self.capture is None else {**env, "TCTI_PCAP_FILE": str(self.capture)}
        with self.log_file.open("wb") as log:
            self._daemon = subprocess.Popen(cmd, env=daemon_env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not self._answers(env):
            if self._daemon.poll() is not None or time.monotonic() > deadline:
                text = self.log_file.read_text(errors="replace")[-1500:]
                self.stop()
                raise SwtpmError(f"tpm2-abrmd did not come up: {text}")
            time.sleep(0.1)
        return self.tcti

    def _answers(self, env: dict[str, str]) -> bool:
        probe = subprocess.run(
            ["tpm2_getrandom", "--hex", "4"], env={**env, "TPM2TOOLS_TCTI": self.tcti},
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        return probe.returncode == 0

    def stop(self) -> None:
        """Stop tpm2-abrmd and its bus (the swtpm keeps running)."""
        if self._daemon is not None:
            self._daemon.terminate()
            try:
                self._daemon.wait(10)
            except subprocess.TimeoutExpired:
                self._daemon.kill()
                self._daemon.wait()
            self._daemon = None
        if self._dbus_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._dbus_pid, signal.SIGTERM)
            self._dbus_pid = None
        self.bus_socket.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Command line for the swtpm/ scripts: provision, start (prints the TCTI), stop, tcti."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("provision", "start", "stop", "tcti"):
        print(
            "usage: python -m entra_keys.testing.swtpm {provision,start,stop,tcti} DIR",
            file=sys.stderr,
        )
        return 2
    tpm = Swtpm(args[1])
    try:
        if args[0] == "provision":
            tpm.provision()
        elif args[0] == "start":
            print(tpm.start(detach=True))  # the script's swtpm outlives this process
        elif args[0] == "stop":
            tpm.stop()
        else:
            print(tpm.tcti)
    except SwtpmError as exc:
        print(f"swtpm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
