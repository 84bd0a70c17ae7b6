"""Proves the SMTP test servers (smtp_servers.py, fault_smtpd.py, certs.py) behave as
documented, using only the curl command-line tool and smtplib -- no outboxd involved."""
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from smtp_servers import *  # noqa: F401,F403  (fixtures and classes)
from smtp_servers import FaultSmtpd, SmtpSink, wait_until

CURL_TIMEOUT = 20


def mail_text(n, to="rcpt@example.test", subject=None, extra=""):
    """A small CRLF message with a stable Message-ID <n@test>."""
    subject = subject or f"message {n}"
    return (f"From: Sender <sender@example.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{n}@test>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\n"
            f"hello {n}\r\n{extra}")


def curl_send(url, rcpt, *extra, n="c1", mail_from="sender@example.test", tmp_path=None):
    """Sends one mail with curl; returns the CompletedProcess (returncode is curl's)."""
    path = tmp_path / f"{n}.eml"
    path.write_bytes(mail_text(n, to=rcpt).encode())
    cmd = ["curl", "-sS", "--max-time", str(CURL_TIMEOUT), url, "--mail-from", mail_from,
           "--mail-rcpt", rcpt, "-T", str(path), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=CURL_TIMEOUT + 10)


def smtp_client(server, timeout=10):
    s = smtplib.SMTP("127.0.0.1", server.port, timeout=timeout)
    s.ehlo("client.test")
    return s


# ----------------------------------------------------------------------------------------
# smtp-sink
# ----------------------------------------------------------------------------------------
def test_sink_captures_and_parses_a_curl_mail(smtp_sink, tmp_path):
    path = tmp_path / "m.eml"
    path.write_bytes(mail_text("one", to="Rcpt <rcpt@example.test>",
                               extra=".leading dot\r\nlast\r\n").encode())
    r = subprocess.run(["curl", "-sS", "--max-time", "20", smtp_sink.url, "--mail-from",
                        "bounces@example.test", "--mail-rcpt", "rcpt@example.test",
                        "-T", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert smtp_sink.wait_for(1, timeout=10) == 1
    [m] = smtp_sink.messages()
    assert m.envelope_from == "bounces@example.test"
    assert m.recipients == ["rcpt@example.test"] and m.envelope_to == "rcpt@example.test"
    assert m.message_id == "<one@test>"
    assert m.subject == "message one"
    assert m.to == "Rcpt <rcpt@example.test>"
    assert b"\n.leading dot\nlast\n" in m.raw  # dot-stuffing undone, CR stripped
    assert m.message.get_content().startswith("hello one")
    assert smtp_sink.message_ids() == {"<one@test>": 1}


def test_sink_parallel_burst_each_mail_its_own_file(smtp_sink):
    total, conns = 1000, 4

    def worker(k):
        with smtplib.SMTP("127.0.0.1", smtp_sink.port, timeout=30) as s:
            for i in range(k, total, conns):
                s.sendmail("a@example.test", [f"r{i}@example.test"], mail_text(i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    smtp_sink.wait_for(total, timeout=30)
    assert smtp_sink.wait_quiet(period=0.3, timeout=10) == total
    ids = smtp_sink.message_ids()
    assert len(ids) == total and set(ids.values()) == {1}
    assert set(ids) == {f"<{i}@test>" for i in range(total)}


def test_sink_whole_server_faults(smtp_sink_factory, tmp_path):
    soft = smtp_sink_factory(soft_reject="RCPT", soft_reply="451 4.3.0 try again later")
    with smtp_client(soft) as s:
        s.mail("a@example.test")
        assert s.rcpt("b@example.test")[0] == 451
    r = curl_send(soft.url, "b@example.test", tmp_path=tmp_path)
    assert r.returncode == 55, r.stderr  # CURLE_SEND_ERROR, as outboxd will see it

    hard = smtp_sink_factory(hard_reject="MAIL", hard_reply="550 5.7.1 refused")
    with smtp_client(hard) as s:
        assert s.mail("a@example.test")[0] == 550

    # 421 on the final dot: the sink wrote the file before replying (reply lost case).
    bye = smtp_sink_factory(reply_421=".")
    s = smtp_client(bye)
    with pytest.raises(smtplib.SMTPDataError) as e:
        s.sendmail("a@example.test", ["b@example.test"], mail_text("bye"))
    assert e.value.smtp_code == 421
    s.close()
    assert bye.wait_for(1, timeout=10) == 1

    mute = smtp_sink_factory(disconnect=".")
    s = smtp_client(mute)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.sendmail("a@example.test", ["b@example.test"], mail_text("mute"))
    s.close()
    assert mute.message_ids() == {"<mute@test>": 1}

    with pytest.raises(TypeError):
        SmtpSink(no_such_fault=True)


def test_sink_pause_resume_restart(smtp_sink):
    smtp_sink.pause()
    done = threading.Event()

    def send():
        with smtplib.SMTP("127.0.0.1", smtp_sink.port, timeout=20) as s:
            s.sendmail("a@example.test", ["b@example.test"], mail_text("paused"))
        done.set()

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.5)
    assert not done.is_set() and smtp_sink.count() == 0
    smtp_sink.resume()
    assert done.wait(15)
    t.join(5)
    assert smtp_sink.wait_for(1, timeout=5) == 1

    port = smtp_sink.port
    smtp_sink.restart(soft_reject="MAIL")
    assert smtp_sink.port == port
    with smtp_client(smtp_sink) as s:
        assert s.mail("a@example.test")[0] == 450
    smtp_sink.restart()  # keeps the faults
    with smtp_client(smtp_sink) as s:
        assert s.mail("a@example.test")[0] == 450
    assert smtp_sink.count() == 1  # the capture directory survives restarts


def test_sink_mail_in_progress_is_not_reported_and_goes_to_partial(smtp_sink):
    s = smtp_client(smtp_sink)
    s.mail("a@example.test")
    s.rcpt("b@example.test")
    code, _ = s.docmd("DATA")
    assert code == 354
    s.send(b"Subject: half\r\nMessage-ID: <half@test>\r\n\r\nnot finished\r\n")
    wait_until(lambda: smtp_sink._open_capture_files(), 5, what="capture file open")
    assert smtp_sink.count() == 0 and smtp_sink.messages() == []
    smtp_sink.stop()
    s.close()
    assert smtp_sink.count() == 0
    # smtp-sink buffers its writes, so the unfinished file may be empty: only its
    # existence is promised.
    assert len(smtp_sink.partial_messages()) == 1


# ----------------------------------------------------------------------------------------
# fault_smtpd: vocabulary
# ----------------------------------------------------------------------------------------
RCPT_FAULTS = [
    ("ok+1@x.test", 250),
    ("whatever+1@x.test", 250),
    ("temp+1@x.test", 451),
    ("perm+1@x.test", 550),
    ("rcpt452+1@x.test", 452),
    ("rcpt552+1@x.test", 552),
    ("TEMP+upper@x.test", 451),
]


@pytest.mark.parametrize("rcpt,code", RCPT_FAULTS)
def test_fault_rcpt_codes(fault_smtpd, rcpt, code):
    with smtp_client(fault_smtpd) as s:
        assert s.mail("a@x.test")[0] == 250
        got, text = s.rcpt(rcpt)
        assert got == code
        if code == 451:
            assert text.startswith(b"4.3.0")
        if code == 550:
            assert text.startswith(b"5.1.1")


@pytest.mark.parametrize("rcpt,code", [("data451+1@x.test", 451), ("data554+1@x.test", 554),
                                       ("data552+1@x.test", 552)])
def test_fault_data_codes_not_spooled(fault_smtpd, rcpt, code, tmp_path):
    r = curl_send(fault_smtpd.url, rcpt, tmp_path=tmp_path)
    assert r.returncode == 8, r.stderr  # a refused final dot is "weird reply" to curl
    with smtp_client(fault_smtpd) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@x.test", [rcpt], mail_text("d"))
        assert e.value.smtp_code == code
        # the connection stays usable after a refused final dot
        assert s.noop()[0] == 250
    assert fault_smtpd.count() == 0


def test_fault_tempn_succeeds_on_try_n_plus_one(fault_smtpd, tmp_path):
    rcpt = "temp2+retry@x.test"
    codes = [curl_send(fault_smtpd.url, rcpt, n=f"t{i}", tmp_path=tmp_path).returncode
             for i in range(3)]
    assert codes == [55, 55, 0]
    # another address has its own count
    assert curl_send(fault_smtpd.url, "temp2+other@x.test", tmp_path=tmp_path).returncode == 55
    [m] = fault_smtpd.messages()
    assert m.envelope_to == rcpt and m.message_id == "<t2@test>"
    assert m.meta["outcome"] == "accepted"


def test_fault_dtempn_and_dropn(fault_smtpd):
    with smtp_client(fault_smtpd) as s:
        with pytest.raises(smtplib.SMTPDataError):
            s.sendmail("a@x.test", ["dtemp1+d@x.test"], mail_text("dt1"))
        s.sendmail("a@x.test", ["dtemp1+d@x.test"], mail_text("dt2"))
    s = smtp_client(fault_smtpd)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.sendmail("a@x.test", ["drop1+d@x.test"], mail_text("dr1"))
    s.close()
    with smtp_client(fault_smtpd) as s:
        s.sendmail("a@x.test", ["drop1+d@x.test"], mail_text("dr2"))
    got = [(m.message_id, m.meta["outcome"]) for m in fault_smtpd.messages()]
    assert got == [("<dt2@test>", "accepted"), ("<dr1@test>", "dropped"),
                   ("<dr2@test>", "accepted")]


def test_fault_drop_closes_without_reply_but_spools(fault_smtpd, tmp_path):
    r = curl_send(fault_smtpd.url, "drop+x@x.test", n="dropped", tmp_path=tmp_path)
    assert r.returncode == 56, r.stderr  # CURLE_RECV_ERROR: the ambiguous outcome
    [m] = fault_smtpd.messages()
    assert m.message_id == "<dropped@test>" and m.meta["outcome"] == "dropped"
    assert fault_smtpd.messages(outcome="accepted") == []
    log = fault_smtpd.session_log()
    dot = next(i for i, r in enumerate(log) if r["dir"] == "C" and r["line"].startswith(". ("))
    assert [r for r in log[dot + 1:] if r["dir"] == "S"] == []


def test_fault_bye421_replies_and_closes(fault_smtpd, tmp_path):
    s = smtp_client(fault_smtpd)
    with pytest.raises(smtplib.SMTPDataError) as e:
        s.sendmail("a@x.test", ["bye421+x@x.test"], mail_text("bye"))
    assert e.value.smtp_code == 421
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        s.noop()
    s.close()
    assert fault_smtpd.count() == 0
    r = curl_send(fault_smtpd.url, "bye421+y@x.test", tmp_path=tmp_path)
    assert r.returncode == 8, r.stderr  # CURLE_WEIRD_SERVER_REPLY: libcurl refuses a malformed reply


def test_fault_delay_and_sender_codes(fault_smtpd):
    with smtp_client(fault_smtpd) as s:
        t0 = time.monotonic()
        s.sendmail("a@x.test", ["delay400+x@x.test"], mail_text("slow"))
        assert time.monotonic() - t0 >= 0.4
        assert s.mail("mail451+x@x.test")[0] == 451
        s.rset()
        assert s.mail("mail550+x@x.test")[0] == 550
    assert fault_smtpd.message_ids() == {"<slow@test>": 1}


def test_fault_greeting_and_control_file(fault_smtpd_factory, tmp_path):
    g = fault_smtpd_factory(greeting=421)
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", g.port, timeout=5)
    assert e.value.smtp_code == 421
    assert curl_send(g.url, "ok@x.test", tmp_path=tmp_path).returncode == 8

    f = fault_smtpd_factory()
    f.set_control(rcpt=451)
    with smtp_client(f) as s:
        s.mail("a@x.test")
        assert s.rcpt("ok+1@x.test")[0] == 451
        f.set_control(data=554)  # takes effect on the open connection too
        s.rset()
        with pytest.raises(smtplib.SMTPDataError):
            s.sendmail("a@x.test", ["ok+2@x.test"], mail_text("c2"))
    f.set_control(greeting=421)
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP("127.0.0.1", f.port, timeout=5)
    f.set_control(drop=True)
    s = smtp_client(f)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.sendmail("a@x.test", ["ok+3@x.test"], mail_text("c3"))
    s.close()
    f.clear_control()
    with smtp_client(f) as s:
        s.sendmail("a@x.test", ["ok+4@x.test"], mail_text("c4"))
    assert [(m.message_id, m.meta["outcome"]) for m in f.messages()] == [
        ("<c3@test>", "dropped"), ("<c4@test>", "accepted")]


def test_fault_restart_and_pause(fault_smtpd):
    port = fault_smtpd.port
    with smtp_client(fault_smtpd) as s:
        s.sendmail("a@x.test", ["ok@x.test"], mail_text("r1"))
    fault_smtpd.restart()
    assert fault_smtpd.port == port
    fault_smtpd.pause()
    with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected, OSError)):
        smtplib.SMTP("127.0.0.1", port, timeout=0.5)
    fault_smtpd.resume()
    with smtp_client(fault_smtpd) as s:
        s.sendmail("a@x.test", ["ok@x.test"], mail_text("r2"))
    assert [m.message_id for m in fault_smtpd.messages()] == ["<r1@test>", "<r2@test>"]


# ----------------------------------------------------------------------------------------
# fault_smtpd: TLS and AUTH
# ----------------------------------------------------------------------------------------
def test_starttls_auth_with_ca(fault_smtpd_factory, tmp_path):
    srv = fault_smtpd_factory(tls="require", auth="user:secret")
    r = curl_send(srv.url, "ok@x.test", "--ssl-reqd", "--cacert", srv.ca_cert,
                  "--user", "user:secret", n="tls", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    [m] = srv.messages()
    assert m.meta["tls"] is True and m.meta["auth_user"] == "user"
    log = srv.session_log()
    client = [(r["tls"], r["line"].split()[0].upper()) for r in log if r["dir"] == "C"]
    verbs = [v for _, v in client]
    assert verbs.index("STARTTLS") < verbs.index("AUTH") < verbs.index("MAIL")
    assert all(tls for tls, v in client if v in ("AUTH", "MAIL", "RCPT", "DATA"))
    assert not any("secret" in r["line"] for r in log)  # credentials masked


def test_starttls_untrusted_and_wrong_host_fail_verification(fault_smtpd_factory, tmp_path):
    for cert in ("untrusted", "wrong-host"):
        srv = fault_smtpd_factory(tls="require", auth="user:secret", cert=cert)
        r = curl_send(srv.url, "ok@x.test", "--ssl-reqd", "--cacert", srv.ca_cert,
                      "--user", "user:secret", tmp_path=tmp_path)
        assert r.returncode == 60, (cert, r.returncode, r.stderr)  # CURLE_PEER_FAILED_VERIFICATION
        assert srv.count() == 0
        verbs = [line.split()[0].upper() for line in srv.client_lines()]
        assert "MAIL" not in verbs and "AUTH" not in verbs


def test_wrong_password_gets_535(fault_smtpd_factory, tmp_path):
    srv = fault_smtpd_factory(tls="require", auth="user:secret")
    r = curl_send(srv.url, "ok@x.test", "--ssl-reqd", "--cacert", srv.ca_cert,
                  "--user", "user:wrong", tmp_path=tmp_path)
    assert r.returncode == 67, r.stderr  # CURLE_LOGIN_DENIED
    assert any(line.startswith("535 ") for line in srv.server_replies())
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        s.starttls(context=__import__("ssl").create_default_context(cafile=srv.ca_cert))
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("user", "wrong")
        assert e.value.smtp_code == 535
    assert srv.count() == 0


def test_required_starttls_refuses_plaintext(fault_smtpd_factory, tmp_path):
    srv = fault_smtpd_factory(tls="require", auth="user:secret")
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
        code, caps = s.ehlo("client.test")
        assert b"STARTTLS" in caps and b"AUTH" not in caps  # AUTH only after TLS
        assert s.mail("a@x.test")[0] == 530
    # curl without --ssl-reqd and without credentials never gets its mail in
    r = curl_send(srv.url, "ok@x.test", tmp_path=tmp_path)
    assert r.returncode != 0
    assert srv.count() == 0


def test_auth_required_without_tls(fault_smtpd_factory):
    srv = fault_smtpd_factory(auth="user:secret")
    with smtp_client(srv) as s:
        assert s.mail("a@x.test")[0] == 530
        s.rset()
        s.login("user", "secret")
        s.sendmail("a@x.test", ["ok@x.test"], mail_text("plainauth"))
    [m] = srv.messages()
    assert m.meta["auth_user"] == "user" and m.meta["tls"] is False


def test_implicit_tls_with_auth(fault_smtpd_factory, tmp_path):
    srv = fault_smtpd_factory(tls="implicit", auth="user:secret")
    assert srv.url.startswith("smtps://")
    r = curl_send(srv.url, "ok@x.test", "--cacert", srv.ca_cert, "--user", "user:secret",
                  n="smtps", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    [m] = srv.messages()
    assert m.message_id == "<smtps@test>" and m.meta["tls"] is True
    assert m.meta["auth_user"] == "user"
