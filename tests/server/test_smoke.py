from tests.support.wire import Wire, admin, grab, submit


def test_submit_grab_complete(server):
    with Wire(server.address) as c, Wire(server.address) as w:
        w.send("CAN_DO", "reverse")
        h = submit(c, "reverse", b"Rasmus")
        name, args = grab(w)
        assert name == "JOB_ASSIGN" and args == [h, b"reverse", b"Rasmus"]
        w.send("WORK_COMPLETE", h, b"sumsaR")
        assert c.expect("WORK_COMPLETE") == [h, b"sumsaR"]
    assert admin(server.address, "status")[0] == b"reverse\t0\t0\t0\n.\n"
