"""`geartrain server` as a process: options, config file, signals, pid and log files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support import process
from tests.support.wire import Wire, admin, grab, submit, wait_until


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*process.geartrain_command(), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help_lists_every_option():
    out = run_cli("server", "--help").stdout
    for flag in ("-p PORT, --port PORT", "-L ADDRESS, --listen ADDRESS", "-j N, --job-retries N",
                 "-w N, --worker-wakeup N", "--job-handle-prefix", "--exceptions", "-l FILE, --log-file FILE",
                 "--verbose LEVEL", "-P FILE, --pid-file FILE", "-b N, --backlog N", "--keepalive",
                 "--keepalive-idle", "--keepalive-interval", "--keepalive-count", "--max-packet-size",
                 "--store URL", "--config FILE", "--shutdown-timeout", "-f N, --file-descriptors N",
                 "SIGHUP"):
        assert flag in out, flag


def test_python_dash_m_and_version():
    res = subprocess.run([sys.executable, "-m", "geartrain", "--version"], capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0
    assert res.stdout.startswith("geartrain ")


@pytest.mark.parametrize("args,message", [
    (["--store", "ftp://host/x"], "unknown kind"),
    (["--verbose", "LOUD"], "--verbose"),
    (["--max-packet-size", "lots"], "not a size"),
    (["--worker-wakeup", "some"], "--worker-wakeup"),
    (["--port", "70000"], "not a TCP port"),
])
def test_bad_options_exit_2_with_a_message(args, message):
    res = run_cli("server", *args)
    assert res.returncode == 2
    assert message in res.stderr


def test_port_in_use_exits_1(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        srv = process.geartrain(port=port, workdir=tmp_path).start(wait=False)
        assert srv.wait(20) == 1
    assert "cannot listen" in srv.log()


def test_config_file_env_and_command_line_precedence(tmp_path):
    port = process.free_port()
    cfg = tmp_path / "geartrain.toml"
    cfg.write_text(f'[server]\nport = {port}\njob-handle-prefix = "FROMFILE"\nverbose = "INFO"\n'
                   'worker_wakeup = "all"\n')
    env = dict(os.environ, GEARTRAIN_VERBOSE="DEBUG")
    argv = [*process.geartrain_command(), "server", "--config", str(cfg), "--listen", "127.0.0.1",
            "--job-handle-prefix", "FROMCLI"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        process.wait_listening("127.0.0.1", port, proc)  # port came from the file
        addr = ("127.0.0.1", port)
        assert admin(addr, "verbose") == [b"OK DEBUG\n"]  # environment beats file
        with Wire(addr) as c:
            assert submit(c, "f", b"x", ptype="SUBMIT_JOB_BG") == b"FROMCLI:1"  # command line beats both
    finally:
        proc.terminate()
        proc.wait(10)


def test_config_file_unknown_key_is_an_error(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server]\nprot = 4730\n")
    res = run_cli("server", "--config", str(cfg))
    assert res.returncode == 2
    assert "unknown option 'prot'" in res.stderr


def test_pid_file_written_and_removed(tmp_path):
    pid_file = tmp_path / "g.pid"
    srv = process.geartrain("--pid-file", str(pid_file), workdir=tmp_path).start()
    assert pid_file.read_text().strip() == str(srv.pid)
    assert admin(srv.address, "getpid") == [b"OK %d\n" % srv.pid]
    assert srv.stop() == 0
    assert not pid_file.exists()


def test_threads_flag_is_accepted_for_gearmand_compatibility(tmp_path):
    srv = process.geartrain("-t", "4", workdir=tmp_path).start()
    try:
        assert admin(srv.address, "status") == [b".\n"]
    finally:
        srv.stop()


def test_sigterm_lets_running_jobs_finish_then_exits(tmp_path):
    srv = process.geartrain("--shutdown-timeout", "30", workdir=tmp_path).start()
    with Wire(srv.address) as client, Wire(srv.address) as worker:
        worker.send("CAN_DO", "slow")
        handle = submit(client, "slow", b"payload")
        _, args = grab(worker)
        srv.signal(signal.SIGTERM)
        # no new connections once stopping
        assert wait_until(lambda: _refused(srv.address), timeout=5)
        assert srv.alive()
        # the running job still completes and its client gets the result
        worker.send("WORK_STATUS", handle, b"1", b"2")
        assert client.expect("WORK_STATUS") == [handle, b"1", b"2"]
        # and no new job is handed out meanwhile
        worker.send("GRAB_JOB")
        assert worker.recv()[0] == "NO_JOB"
        worker.send("WORK_COMPLETE", handle, b"done")
        assert client.expect("WORK_COMPLETE") == [handle, b"done"]
        assert srv.wait(10) == 0
    assert "stopped" in srv.log()


def test_sigterm_grace_period_expires(tmp_path):
    srv = process.geartrain("--shutdown-timeout", "1", workdir=tmp_path).start()
    with Wire(srv.address) as client, Wire(srv.address) as worker:
        worker.send("CAN_DO", "stuck")
        submit(client, "stuck", b"x")
        grab(worker)
        srv.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert srv.alive()  # still waiting for the running job
        assert srv.wait(15) == 0  # ... but not forever
    assert "still running" in srv.log()


def test_sigterm_without_running_jobs_exits_at_once(tmp_path):
    srv = process.geartrain(workdir=tmp_path).start()
    srv.signal(signal.SIGTERM)
    assert srv.wait(5) == 0


def test_sighup_reopens_the_log_file(tmp_path):
    log = tmp_path / "g.log"
    srv = process.geartrain("--log-file", str(log), "--verbose", "INFO", workdir=tmp_path).start()
    try:
        assert wait_until(lambda: "listening on" in log.read_text())
        rotated = tmp_path / "g.log.1"
        log.rename(rotated)
        srv.signal(signal.SIGHUP)
        assert wait_until(lambda: log.exists() and "log file reopened" in log.read_text())
        assert "log file reopened" not in rotated.read_text()
    finally:
        srv.stop()


def test_keepalive_is_set_on_accepted_connections(tmp_path):
    srv = process.geartrain("--keepalive", "--keepalive-idle", "77", "--keepalive-interval", "5",
                            "--keepalive-count", "3", workdir=tmp_path).start()
    try:
        with Wire(srv.address) as c:
            c.send("ECHO_REQ", b"x")
            c.expect("ECHO_RES")
            res = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{srv.port} )"],
                                 capture_output=True, text=True, timeout=10)
            assert "timer:(keepalive," in res.stdout, res.stdout
            # the idle time is 77 s, so the first probe is due in more than a minute
            assert "keepalive,1min" in res.stdout or "keepalive,76" in res.stdout or \
                "keepalive,77" in res.stdout, res.stdout
    finally:
        srv.stop()


def test_without_keepalive_no_keepalive_timer(tmp_path):
    srv = process.geartrain(workdir=tmp_path).start()
    try:
        with Wire(srv.address) as c:
            c.send("ECHO_REQ", b"x")
            c.expect("ECHO_RES")
            res = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{srv.port} )"],
                                 capture_output=True, text=True, timeout=10)
            assert res.stdout.strip()
            assert "keepalive" not in res.stdout
    finally:
        srv.stop()


def _refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=0.5).close()
    except OSError:
        return True
    return False


def test_open_file_limit_is_raised(tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))  # inherited by the server
    try:
        srv = process.geartrain("--file-descriptors", str(want), workdir=tmp_path).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        limits = open(f"/proc/{srv.pid}/limits").read()
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
        assert int(line.split()[3]) == want, line
    finally:
        srv.stop()
