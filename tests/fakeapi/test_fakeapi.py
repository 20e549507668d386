"""The Xtremepush API double (tests/fakeapi/fakeapi.py), run for real over HTTPS."""

import http.client
import json
import ssl
import time

import pytest


IMPORT = "import/profile"
COLS = ["user_id", "email", "email_subscription", "mobile_number", "sms_subscription",
        "first_name"]
SAM = ["fe56bc676be78", "sam@example.com", 1, "353850123456", 1, "Sam"]
LAURA = ["fe56bc676be79", "laura@example.com", 1, "353850123457", 1, "Laura"]


def rows_n(n, start=0):
    return [[f"u{i:06d}", f"user{i}@example.com", 1, f"35385{i:07d}", 1, "Name"]
            for i in range(start, start + n)]


def imp(api, columns=COLS, rows=(SAM,), **extra):
    return api.call(IMPORT, dict({"columns": columns, "rows": list(rows)}, **extra))


def assert_400(resp, message, first_error):
    st, obj = resp
    assert st == 400
    assert obj["code"] == 400 and obj["success"] is False
    assert obj["message"] == message
    assert obj["errors"][0] == first_error


# -- server rules -------------------------------------------------------------------------

def test_body_not_json_is_400(api):
    st, _, obj = api.http("POST", "/api/external/import/profile", b"{not json")
    assert st == 400
    assert obj == {"code": 400, "success": False, "message": "Invalid JSON body",
                   "errors": ["body: not valid JSON"]}
    assert api.profiles() == {}


def test_wrong_token_is_401(api):
    for body in ({"apptoken": "wrong", "columns": COLS, "rows": [SAM]},
                 {"columns": COLS, "rows": [SAM]}):
        st, _, obj = api.http("POST", "/api/external/import/profile", body)
        assert st == 401
        assert obj == {"code": 401, "success": False, "message": "Authentication failed"}
    assert api.profiles() == {}
    assert [r["apptoken_ok"] for r in api.requests()] == [False, False]


def test_token_checked_before_request_rules(api):
    st, obj = imp(api, columns=["email"], apptoken="wrong")
    assert st == 401


def test_no_user_id_is_400(api):
    assert_400(imp(api, columns=["first_name"], rows=[["Sam"]]),
               "A user_id column is required", "columns: user_id is missing")


def test_email_without_subscription_is_400(api):
    assert_400(imp(api, columns=["user_id", "email"], rows=[["a", "a@example.com"]]),
               "email requires email_subscription",
               "columns: email is set without email_subscription")


def test_mobile_without_sms_subscription_is_400(api):
    assert_400(imp(api, columns=["user_id", "mobile_number"], rows=[["a", "353850123456"]]),
               "mobile_number requires sms_subscription",
               "columns: mobile_number is set without sms_subscription")


def test_mobile_with_plus_is_400(api):
    bad = list(LAURA)
    bad[3] = "+353850123457"
    st, obj = imp(api, rows=[SAM, bad])
    assert_400((st, obj), "mobile_number must be E.164 digits without +",
               "rows[1]: mobile_number contains '+'")
    assert len(obj["errors"]) == 1
    assert api.profiles() == {}


def test_more_than_10000_rows_is_400(api):
    assert_400(imp(api, rows=rows_n(10001)),
               "Too many records: at most 10000 per request", "rows: 10001 records")
    assert api.profiles() == {}


def test_10000_rows_are_accepted(api):
    st, obj = imp(api, rows=rows_n(10000))
    assert st == 202 and obj["code"] == 202
    assert len(api.profiles()) == 10000


def test_unknown_column_is_400(api):
    st, obj = imp(api, columns=["user_id", "first_name", "shoe_size"], rows=[["a", "A", 9]])
    assert_400((st, obj), "Unknown attribute", "columns[2]: attribute 'shoe_size' does not exist")


def test_system_and_configured_attributes_are_known(api):
    cols = ["user_id", "email", "email_subscription", "mobile_number", "sms_subscription",
            "language", "timezone", "whatsapp_number", "whatsapp_subscription",
            "first_name", "lifetime_value", "vip"]
    row = ["a", "a@example.com", 1, "353850123456", 1, "en", "Europe/Dublin", "353850123456",
           0, "A", 12.5, True]
    st, obj = imp(api, columns=cols, rows=[row])
    assert st == 200, obj


def test_row_length_mismatch_is_400(api):
    st, obj = imp(api, rows=[SAM, LAURA[:-1]])
    assert_400((st, obj), "Row length does not match columns",
               "rows[1]: 5 values for 6 columns")
    assert api.profiles() == {}


def test_rules_apply_in_order(api):
    # no user_id and an unknown column: the user_id rule is reported
    assert imp(api, columns=["shoe_size"], rows=[[1]])[1]["message"] == \
        "A user_id column is required"
    # a '+' in a short row: the '+' rule comes before the row-length rule
    assert imp(api, rows=[["a", "a@example.com", 1, "+3538", 1]])[1]["message"] == \
        "mobile_number must be E.164 digits without +"


# -- success paths ------------------------------------------------------------------------

def test_fewer_than_100_rows_is_200_and_upserted(api):
    st, obj = imp(api, rows=[SAM, LAURA])
    assert st == 200
    assert obj["code"] == 200 and obj["success"] is True and isinstance(obj["message"], str)
    assert "model" not in obj
    assert api.profiles() == {
        "fe56bc676be78": {"email": "sam@example.com", "email_subscription": 1,
                          "mobile_number": "353850123456", "sms_subscription": 1,
                          "first_name": "Sam"},
        "fe56bc676be79": {"email": "laura@example.com", "email_subscription": 1,
                          "mobile_number": "353850123457", "sms_subscription": 1,
                          "first_name": "Laura"}}


def test_99_rows_is_200(api):
    assert imp(api, rows=rows_n(99))[0] == 200


def test_null_keeps_the_stored_value_and_other_values_overwrite(api):
    assert imp(api, rows=[SAM])[0] == 200
    assert imp(api, columns=["user_id", "first_name", "lifetime_value"],
               rows=[["fe56bc676be78", None, 3.5]])[0] == 200
    assert imp(api, columns=["user_id", "first_name"], rows=[["fe56bc676be78", "Samuel"]])[0] \
        == 200
    p = api.profiles()["fe56bc676be78"]
    assert p["first_name"] == "Samuel"
    assert p["lifetime_value"] == 3.5
    assert p["email"] == "sam@example.com"
    assert imp(api, columns=["user_id", "first_name"], rows=[["fe56bc676be78", None]])[0] == 200
    assert api.profiles()["fe56bc676be78"]["first_name"] == "Samuel"


def test_100_rows_is_202_and_the_task_completes_after_the_delay(api):
    t0 = time.time()
    st, obj = imp(api, rows=rows_n(100))
    assert st == 202
    assert obj["code"] == 202 and obj["success"] is True
    tid = obj["model"]["id"]
    assert isinstance(tid, str) and tid
    st, info = api.call("info/task", {"id": tid})
    assert st == 200 and info["code"] == 200 and info["success"] is True
    m = info["model"]
    assert m["id"] == tid and m["identifier"] == "profile_import"
    assert m["status"] in ("queued", "running")
    assert m["finish_time"] is None
    assert abs(m["create_time"] - t0) < 2
    assert set(m) == {"id", "identifier", "status", "create_time", "finish_time", "message"}
    time.sleep(api.task_delay + 0.1)
    m = api.call("info/task", {"id": tid})[1]["model"]
    assert m["status"] == "complete"
    assert isinstance(m["finish_time"], int) and m["finish_time"] >= m["create_time"]
    assert [r["task_id"] for r in api.imports()] == [tid]


def test_task_status_goes_queued_running_complete(api):
    tid = imp(api, rows=rows_n(150))[1]["model"]["id"]
    seen = []
    deadline = time.time() + api.task_delay + 2
    while time.time() < deadline:
        s = api.call("info/task", {"id": tid})[1]["model"]["status"]
        if not seen or seen[-1] != s:
            seen.append(s)
        if s == "complete":
            break
        time.sleep(0.05)
    assert seen == ["queued", "running", "complete"]


def test_task_outcome_failed(api):
    api.task_outcome("failed")
    tid = imp(api, rows=rows_n(100))[1]["model"]["id"]
    time.sleep(api.task_delay + 0.1)
    m = api.call("info/task", {"id": tid})[1]["model"]
    assert m["status"] == "failed" and m["finish_time"] is not None
    api.task_outcome("complete")
    tid = imp(api, rows=rows_n(100))[1]["model"]["id"]
    time.sleep(api.task_delay + 0.1)
    assert api.call("info/task", {"id": tid})[1]["model"]["status"] == "complete"


def test_info_task_unknown_id_is_404_and_bad_token_401(api):
    st, obj = api.call("info/task", {"id": "999999"})
    assert st == 404
    assert obj == {"code": 404, "success": False, "message": "Task not found"}
    tid = imp(api, rows=rows_n(100))[1]["model"]["id"]
    st, obj = api.call("info/task", {"id": tid, "apptoken": "nope"})
    assert st == 401 and obj["message"] == "Authentication failed"


def test_list_task_condition_order_limit_offset(api):
    t1 = imp(api, rows=rows_n(100))[1]["model"]["id"]
    time.sleep(api.task_delay + 0.1)
    cutoff = int(time.time())
    time.sleep(1.05)            # finish_time is in whole seconds
    t2 = imp(api, rows=rows_n(100, 100))[1]["model"]["id"]
    t3 = imp(api, rows=rows_n(100, 200))[1]["model"]["id"]
    ident = ["identifier", "=", "profile_import"]

    st, obj = api.call("list/task", {"condition": [ident], "order": ["id DESC"],
                                     "limit": 10, "offset": 0})
    assert st == 200 and obj["success"] is True
    assert [m["id"] for m in obj["data"]] == [t3, t2, t1]
    obj = api.call("list/task", {"condition": [ident], "order": ["id ASC"], "limit": 2,
                                 "offset": 1})[1]
    assert [m["id"] for m in obj["data"]] == [t2, t3]
    # finished after the cutoff: none until t2/t3 finish
    cond = [ident, ["finish_time", ">", cutoff]]
    obj = api.call("list/task", {"condition": cond, "order": ["id DESC"]})[1]
    assert obj["data"] == []
    time.sleep(api.task_delay + 0.1)
    obj = api.call("list/task", {"condition": cond, "order": ["id DESC"]})[1]
    assert [m["id"] for m in obj["data"]] == [t3, t2]
    assert all(m["status"] == "complete" for m in obj["data"])
    obj = api.call("list/task", {"condition": [["identifier", "=", "other"]]})[1]
    assert obj["data"] == []
    st, obj = api.call("list/task", {"condition": [["colour", "=", "red"]]})
    assert st == 400 and obj["errors"] == ["condition[0]: unsupported condition"]
    st, obj = api.call("list/task", {"apptoken": "bad"})
    assert st == 401


def test_unknown_path_404_and_non_post_405(api):
    st, _, obj = api.http("POST", "/api/external/import/nothing", {"apptoken": api.token})
    assert st == 404 and obj == {"code": 404, "success": False, "message": "Not found"}
    st, hdrs, obj = api.http("GET", "/api/external/import/profile")
    assert st == 405 and obj["code"] == 405 and obj["success"] is False
    assert hdrs["allow"] == "POST"


# -- faults -------------------------------------------------------------------------------

def test_fault_500_does_not_upsert_and_is_consumed(api):
    api.faults([{"status": 500}])
    st, obj = imp(api)
    assert st == 500 and obj["code"] == 500 and obj["success"] is False
    assert api.profiles() == {}
    assert api.pending_faults() == []
    assert imp(api)[0] == 200
    assert "fe56bc676be78" in api.profiles()
    assert [r["status"] for r in api.imports()] == [500, 200]


def test_fault_429_sends_retry_after(api):
    api.faults([{"status": 429, "retry_after": "2"}])
    st, hdrs, obj = api.http("POST", "/api/external/import/profile",
                             {"apptoken": api.token, "columns": COLS, "rows": [SAM]})
    assert st == 429 and hdrs["retry-after"] == "2" and obj["code"] == 429
    assert api.profiles() == {}


def test_fault_delay_then_normal(api):
    api.faults([{"delay": 1.0}])
    t = time.monotonic()
    st, _ = imp(api)
    assert st == 200 and time.monotonic() - t >= 1.0
    assert "fe56bc676be78" in api.profiles()
    t = time.monotonic()
    assert imp(api)[0] == 200 and time.monotonic() - t < 1.0


def raw_conn(api):
    return http.client.HTTPSConnection("127.0.0.1", api.port, context=api._ctx, timeout=10)


def test_fault_drop_reads_body_upserts_nothing_and_closes(api):
    api.faults([{"drop": True}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
        imp(api)
    assert api.profiles() == {}
    rec = api.imports()[0]
    assert rec["status"] is None and rec["fault"] == {"drop": True} and rec["n_rows"] == 1
    assert imp(api)[0] == 200


def test_fault_drop_after_upsert_lands_without_a_reply(api):
    api.faults([{"drop_after_upsert": True}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
        imp(api, rows=rows_n(100))
    assert len(api.profiles()) == 100
    rec = api.imports()[0]
    assert rec["status"] is None and rec["task_id"] is not None


def test_fault_custom_400(api):
    api.faults([{"status": 400, "message": "Attribute vip is not boolean",
                 "errors": [{"row": 3, "attribute": "vip"}]}])
    st, obj = imp(api)
    assert (st, obj) == (400, {"code": 400, "success": False,
                               "message": "Attribute vip is not boolean",
                               "errors": [{"row": 3, "attribute": "vip"}]})
    assert api.profiles() == {}


def test_faults_apply_one_per_request_in_order(api):
    api.faults([{"status": 500}, {"status": 503}])
    assert [imp(api)[0] for _ in range(3)] == [500, 503, 200]


def test_bad_fault_is_refused(api):
    st, _, obj = api.http("POST", "/_admin/faults", [{"explode": True}])
    assert st == 400 and obj["message"] == "faults[0]: unknown keys ['explode']"


# -- admin / transport --------------------------------------------------------------------

def test_requests_record_every_api_request(api):
    t = time.time()
    imp(api, rows=[SAM, LAURA])
    imp(api, rows=rows_n(100))
    api.call("info/task", {"id": "1"})
    recs = api.requests()
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert [r["path"] for r in recs] == ["/api/external/import/profile"] * 2 + \
        ["/api/external/info/task"]
    assert [r["status"] for r in recs] == [200, 202, 404]
    assert [r["n_rows"] for r in recs] == [2, 100, None]
    assert recs[0]["rows"] == [SAM, LAURA] and recs[0]["columns"] == COLS
    assert recs[1]["task_id"] is not None and recs[2]["task_id"] == "1"
    assert all(r["apptoken_ok"] is True for r in recs)
    assert all(t - 1 < r["time"] < time.time() + 1 for r in recs)
    assert [r["seq"] for r in api.requests(since=2)] == [3]
    assert api.requests(rows=False)[0]["rows"] is None
    assert api.health() == {"ok": True, "requests": 3}


def test_apptoken_never_in_admin_requests(api):
    imp(api)
    imp(api, apptoken=api.token + "x")
    api.http("POST", "/api/external/import/profile", "{" + json.dumps(api.token))
    api.call("info/task", {"id": "1"})
    for path in ("/_admin/requests", "/_admin/profiles"):
        conn = raw_conn(api)
        conn.request("GET", path)
        data = conn.getresponse().read()
        conn.close()
        assert api.token.encode() not in data
        assert b"apptoken\"" not in data


def test_reset_clears_everything(api):
    api.faults([{"status": 500}, {"status": 500}])
    api.task_outcome("failed")
    imp(api)
    imp(api, rows=rows_n(100))
    api.reset()
    assert api.requests() == [] and api.profiles() == {} and api.pending_faults() == []
    tid = imp(api, rows=rows_n(100))[1]["model"]["id"]
    time.sleep(api.task_delay + 0.1)
    assert api.call("info/task", {"id": tid})[1]["model"]["status"] == "complete"


def test_keep_alive_and_content_length(api):
    conn = raw_conn(api)
    body = json.dumps({"apptoken": api.token, "columns": COLS, "rows": [SAM]})
    for _ in range(3):
        conn.request("POST", "/api/external/import/profile", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200 and resp.version == 11
        assert int(resp.getheader("Content-Length")) == len(data)
    sock = conn.sock
    conn.request("POST", "/api/external/info/task", body=json.dumps(
        {"apptoken": api.token, "id": "x"}))
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404 and conn.sock is sock      # same connection throughout
    conn.close()


def test_expect_100_continue(api):
    conn = raw_conn(api)
    conn.connect()
    body = json.dumps({"apptoken": api.token, "columns": COLS, "rows": [SAM]}).encode()
    conn.sock.sendall(b"POST /api/external/import/profile HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    assert conn.sock.recv(64).startswith(b"HTTP/1.1 100")
    conn.sock.sendall(body)
    resp = http.client.HTTPResponse(conn.sock)
    resp.begin()
    assert resp.status == 200
    conn.close()


def test_chunked_request_body(api):
    conn = raw_conn(api)
    body = json.dumps({"apptoken": api.token, "columns": COLS, "rows": [SAM]}).encode()
    conn.request("POST", "/api/external/import/profile", body=iter([body[:10], body[10:]]),
                 encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    assert conn.getresponse().status == 200
    conn.close()


@pytest.mark.timeout(60)
def test_throughput_10000_row_bodies(api):
    rows = [[f"u{i:012d}", f"user{i}@example.com", 1, f"35385{i:07d}", 1, "Samantha"]
            for i in range(10000)]
    body = json.dumps({"apptoken": api.token, "columns": COLS, "rows": rows}).encode()
    conn = raw_conn(api)
    best = 0.0
    for _ in range(4):          # best of 4 rounds: other work on the machine comes and goes
        n = 6
        t = time.monotonic()
        for _ in range(n):
            conn.request("POST", "/api/external/import/profile", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 202
        best = max(best, n / (time.monotonic() - t))
    conn.close()
    # about 110/s with one free core (~1 MB bodies); under 25/s something is badly wrong
    # (per-row work on the request path, Nagle, the cyclic GC rescanning the store)
    assert best > 25, f"{best:.1f} requests/s"
