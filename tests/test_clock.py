"""The clock check (both sources, with injected command and kernel answers), the wait's bound
and STATUS text, the offset from a Date header, and Flower's limits in the fleet's words.

No process here: the real fed-agent and coordinator are in test_clock_daemon.py and
test_clock_ahead.py. The limits are read from the installed Flower, so a Flower upgrade that
changes them fails here instead of in the field.
"""

from __future__ import annotations

import re
import subprocess
from email.utils import formatdate

import pytest
from fed_agent.clock import (STA_UNSYNC, TIME_ERROR, ClockSection, ClockWatch, SyncReading, adjtimex_reading,
                             date_offset, sync_check, timedatectl_reading)
from fed_common.clock import AHEAD_LIMIT_SECONDS, BEHIND_LIMIT_SECONDS, ClockStatus, clock_problems, offset_problem
from fed_common.heartbeat import Heartbeat


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def info(self, event, **kw):
        self.events.append(("info", event, kw))

    def warning(self, event, **kw):
        self.events.append(("warning", event, kw))

    def error(self, event, **kw):
        self.events.append(("error", event, kw))


def timedatectl(stdout: str = "", returncode: int = 0, raises: Exception | None = None):
    """A stand-in for subprocess.run answering as `timedatectl show -p ...` would."""
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        if raises:
            raise raises
        return subprocess.CompletedProcess(cmd, returncode, stdout=stdout, stderr="")
    run.calls = calls
    return run


NO_SYSTEMD = timedatectl(returncode=1, stdout="")  # "System has not been booted with systemd"


def test_flower_limits_are_the_installed_flowers():
    from flwr.common.constant import SYSTEM_TIME_TOLERANCE, TIMESTAMP_TOLERANCE

    assert AHEAD_LIMIT_SECONDS == SYSTEM_TIME_TOLERANCE
    assert BEHIND_LIMIT_SECONDS == TIMESTAMP_TOLERANCE + SYSTEM_TIME_TOLERANCE


@pytest.mark.parametrize("stdout, expected", [
    ("NTP=yes\nNTPSynchronized=no\n", SyncReading("no", "timedatectl", can_sync=True)),
    ("NTP=yes\nNTPSynchronized=yes\n", SyncReading("yes", "timedatectl", can_sync=True)),
    # a systemd-nspawn host without systemd-timesyncd (the system test's Pis): nothing will sync it
    ("NTP=no\nNTPSynchronized=no\n", SyncReading("no", "timedatectl", can_sync=False)),
])
def test_timedatectl_answers(stdout, expected):
    run = timedatectl(stdout)
    assert timedatectl_reading(run) == expected
    assert run.calls == [["timedatectl", "show", "-p", "NTPSynchronized", "-p", "NTP"]]


@pytest.mark.parametrize("run", [NO_SYSTEMD, timedatectl(raises=FileNotFoundError("timedatectl")),
                                 timedatectl(raises=subprocess.TimeoutExpired("timedatectl", 3)),
                                 timedatectl("garbage\n")])
def test_timedatectl_unavailable_is_none(run):
    assert timedatectl_reading(run) is None


@pytest.mark.parametrize("answer, synchronised", [
    ((0, 0x2001), "yes"),  # TIME_OK, STA_PLL | STA_NANO
    ((TIME_ERROR, STA_UNSYNC), "no"),  # what this build machine's kernel says
    ((0, STA_UNSYNC), "no"),
    ((TIME_ERROR, 0), "no"),
])
def test_adjtimex_status_bits(answer, synchronised):
    assert adjtimex_reading(lambda: answer) == SyncReading(synchronised, "adjtimex", can_sync=False)


def test_adjtimex_refused_is_none():
    """ProtectClock=yes with SystemCallErrorNumber=EPERM: adjtimex returns -1."""
    assert adjtimex_reading(lambda: (-1, 0)) is None

    def missing():
        raise AttributeError("adjtimex")
    assert adjtimex_reading(missing) is None


def test_real_kernel_answers_or_is_refused():
    """The real call on this machine: a reading from the kernel, never an exception."""
    reading = adjtimex_reading()
    assert reading is None or reading.synchronised in ("yes", "no")


@pytest.mark.parametrize("check, run, adjtimex, expected", [
    ("auto", timedatectl("NTP=yes\nNTPSynchronized=no\n"), lambda: (0, 0), SyncReading("no", "timedatectl", True)),
    ("auto", NO_SYSTEMD, lambda: (TIME_ERROR, STA_UNSYNC), SyncReading("no", "adjtimex", False)),
    ("auto", NO_SYSTEMD, lambda: (-1, 0), SyncReading("unknown", "none")),
    ("timedatectl", NO_SYSTEMD, lambda: (0, 0), SyncReading("unknown", "none")),
    # asked for explicitly, the kernel's word is worth waiting for
    ("adjtimex", timedatectl("NTP=yes\nNTPSynchronized=yes\n"), lambda: (TIME_ERROR, STA_UNSYNC),
     SyncReading("no", "adjtimex", True)),
    ("off", timedatectl("NTP=yes\nNTPSynchronized=no\n"), lambda: (0, 0), SyncReading("unknown", "none")),
])
def test_sync_check_sources(check, run, adjtimex, expected):
    assert sync_check(check, run, adjtimex)() == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch(readings: list[SyncReading], bound: float = 300.0):
    clock, log = FakeClock(), Log()
    answers = iter(readings)
    reads = []

    def read():
        reads.append(clock.now)
        return next(answers)
    gate = ClockWatch(ClockSection(wait_for_sync_seconds=bound), log, read=read, monotonic=clock)
    return gate, clock, log, reads


UNSYNCED = SyncReading("no", "timedatectl", can_sync=True)
SYNCED = SyncReading("yes", "timedatectl", can_sync=True)


def test_waits_with_status_text_until_synchronised():
    gate, clock, log, reads = watch([UNSYNCED, UNSYNCED, SYNCED])
    assert not gate.may_start_supernode()
    assert gate.status_parts() == (["waiting for the clock to synchronise (NTP): 0 s of at most 300 s"], [])
    assert gate.status().waiting
    clock.now += 2
    assert not gate.may_start_supernode() and len(reads) == 1  # rechecked every 5 s, not every tick
    clock.now += 38
    assert not gate.may_start_supernode()
    assert gate.status_parts()[0] == ["waiting for the clock to synchronise (NTP): 40 s of at most 300 s"]
    clock.now += 5
    assert gate.may_start_supernode() and len(reads) == 3
    assert log.events[-1] == ("info", "clock_checked", {"synchronised": "yes", "source": "timedatectl",
                                                         "waited_seconds": 45.0})
    assert not gate.status().waiting


def test_bound_then_starts_anyway_with_a_warning():
    gate, clock, log, _ = watch([UNSYNCED] * 10, bound=12)
    assert not gate.may_start_supernode()
    clock.now += 11.9
    assert not gate.may_start_supernode()
    clock.now += 0.1
    assert gate.may_start_supernode()
    assert log.events == [("warning", "clock_not_synchronised_starting_anyway",
                           {"waited_seconds": 12.0, "bound_seconds": 12, "source": "timedatectl"})]
    assert gate.status_parts() == ([], ["clock not synchronised (NTP, timedatectl)"])
    clock.now += 1000
    assert gate.may_start_supernode()  # for good


@pytest.mark.parametrize("reading", [SyncReading("no", "timedatectl", can_sync=False),
                                     SyncReading("no", "adjtimex", can_sync=False),
                                     SyncReading("unknown", "none")])
def test_no_wait_where_nothing_can_sync_or_nothing_can_tell(reading):
    gate, _, log, _ = watch([reading])
    assert gate.may_start_supernode()
    assert log.events[0][1] == "clock_checked"


def test_zero_bound_never_waits():
    gate, _, _, _ = watch([UNSYNCED], bound=0)
    assert gate.may_start_supernode()


def test_offset_from_date_header():
    # the server's clock 62 s behind ours, read at a whole second: Date truncates
    sent = 1_700_000_000.2
    offset, error = date_offset(formatdate(sent - 62, usegmt=True), sent, sent + 0.2)
    assert 61 <= offset <= 62 and error == 1.1
    assert date_offset(None, sent, sent) is None
    assert date_offset("yesterday-ish", sent, sent) is None


def test_offset_reaches_the_heartbeat_and_the_status_line():
    gate, _, _, _ = watch([SYNCED, SYNCED])
    gate.may_start_supernode()
    gate.record_reply_date("not a date", 0, 0)
    assert gate.status().offset_seconds is None
    gate.record_reply_date(formatdate(1_700_000_000, usegmt=True), 1_700_000_063.0, 1_700_000_063.0)
    status = gate.status()
    assert (status.offset_seconds, status.offset_error_seconds) == (62.0, 1.0)
    assert gate.status_parts() == (["clock 62 s ahead: node authentication will fail"], [])


@pytest.mark.parametrize("offset, words", [
    (4.9, None), (5.0, "clock 5 s ahead: node authentication will fail"),
    (62.3, "clock 62 s ahead: node authentication will fail"),
    (-304.9, None), (-305.0, "clock 305 s behind: node authentication will fail"),
    (-4000, "clock 4000 s behind: node authentication will fail"), (None, None),
])
def test_flowers_window_in_words(offset, words):
    assert offset_problem(offset) == words


def test_problems_in_words():
    assert clock_problems(None) == []
    assert clock_problems(ClockStatus(synchronised="yes", source="timedatectl", offset_seconds=0.3)) == []
    assert clock_problems(ClockStatus(synchronised="no", source="adjtimex", offset_seconds=62.0)) == [
        "clock not synchronised (NTP, adjtimex)", "clock 62 s ahead: node authentication will fail"]
    assert clock_problems(ClockStatus(synchronised="no", source="timedatectl", waiting=True)) == [
        "waiting for the clock to synchronise (NTP): SuperNode not started"]


def test_heartbeat_without_clock_stays_valid_and_a_bad_clock_is_refused():
    base = {"agent": "pi-1", "version": "0.1", "uptime_seconds": 1.0, "supernode": {"state": "starting"}}
    assert Heartbeat.model_validate(base).clock is None  # an agent from before clocks
    beat = Heartbeat.model_validate({**base, "clock": {"synchronised": "no", "source": "adjtimex",
                                                       "offset_seconds": 62.0, "offset_error_seconds": 0.6}})
    assert beat.clock.offset_seconds == 62.0
    for bad in ({"synchronised": "maybe"}, {"offset_seconds": float("inf")}, {"offset_seconds": "62"},
                {"offset_error_seconds": -1.0}, {"colour": "red"}):
        with pytest.raises(ValueError):
            Heartbeat.model_validate({**base, "clock": bad})


@pytest.mark.parametrize("node_ahead, refused", [(62, True), (4, False), (-300, False), (-310, True)])
def test_flowers_own_check_refuses_what_the_words_say(node_ahead, refused):
    """Flower 1.42's SuperLink interceptor on a request signed by a node `node_ahead` seconds
    off: the fleet view's words are Flower's verdict, not a guess."""
    import datetime

    import grpc
    from flwr.common.constant import PUBLIC_KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
    from flwr.server.superlink.fleet.grpc_rere.node_auth_server_interceptor import NodeAuthServerInterceptor
    from flwr.supercore.date import now
    from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes, sign_message

    private, public = generate_key_pairs()
    signed_at = (now() + datetime.timedelta(seconds=node_ahead)).isoformat()
    details = type("Details", (), {"method": "/flwr.proto.Fleet/PullMessages", "invocation_metadata": [
        (PUBLIC_KEY_HEADER, public_key_to_bytes(public)), (TIMESTAMP_HEADER, signed_at),
        (SIGNATURE_HEADER, sign_message(private, signed_at.encode("ascii")))]})()
    handler = NodeAuthServerInterceptor(state_factory=None).intercept_service(
        lambda _: grpc.unary_unary_rpc_method_handler(lambda request, context: None), details)
    aborted = []

    class Context:
        def abort(self, code, message):
            aborted.append(message)
            raise grpc.RpcError(message)
    if refused:
        with pytest.raises(grpc.RpcError):
            handler.unary_unary(None, Context())
        assert aborted == ["Invalid timestamp"]
    else:
        assert handler.unary_unary.__name__ == "_generic_method_handler"  # passed on to the Fleet API
    assert (offset_problem(node_ahead) is not None) == refused


def test_coordinator_status_line_names_the_agents_flower_refuses():
    from types import SimpleNamespace

    from fed_coordinator.api.clock_view import clock_status_text

    def row(name, offset):
        beat = SimpleNamespace(clock=ClockStatus(offset_seconds=offset) if offset is not None else None)
        return SimpleNamespace(name=name, heartbeat=beat)
    fleet = [row("pi-1", 62.4), row("pi-2", 0.2), row("pi-3", None), row("pi-4", -400.0)]
    assert clock_status_text(fleet) == ("; pi-1 clock 62 s ahead: node authentication will fail, "
                                        "pi-4 clock 400 s behind: node authentication will fail")
    assert clock_status_text(fleet, shown=1).endswith("will fail (+1 more)")
    assert clock_status_text(fleet[1:3]) == ""


def not_yet_valid_certificate(folder, days_ahead: int = 2):
    """A self-signed certificate for 127.0.0.1 valid only from `days_ahead` days on: what a Pi
    whose clock is that far behind sees of a certificate issued today."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coordinator")])
    start = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days_ahead)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_a_certificate_not_yet_valid_is_said_on_the_status_line(tmp_path):
    """A clock far behind cannot be measured (no reply, no Date): the heartbeat's real TLS
    failure is what the STATUS line names."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from conftest import wait_for
    from fed_agent.heartbeat import HeartbeatSender

    cert_file, key_file = not_yet_valid_certificate(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(0o600)
    gate, _, log, _ = watch([SYNCED] * 3)
    gate.may_start_supernode()
    sender = HeartbeatSender(f"https://127.0.0.1:{server.server_address[1]}/api/v1/heartbeat", token, 5, 3,
                             lambda: Heartbeat(agent="pi-1", version="0.1", uptime_seconds=1.0,
                                               supernode={"state": "starting"}),
                             log, ca_file=cert_file, on_failure=gate.record_heartbeat_error)
    sender.start()
    try:
        wait_for(lambda: gate.tls_problem, 10, what="the TLS failure recorded")
    finally:
        sender.stop()
        server.shutdown()
    first, _ = gate.status_parts()
    assert len(first) == 1 and re.fullmatch(r"heartbeat TLS: certificate is not yet valid at this clock "
                                            r"\(\d{4}-\d\d-\d\d \d\d:\d\d UTC\): is the clock wrong\?", first[0]), first
    gate.record_heartbeat_error("cannot reach https://x: [Errno 111] Connection refused")
    assert gate.status_parts() == ([], [])  # other failures are not the clock's
