"""A first end-to-end check that the server process starts and answers (PSD README example)."""


def test_server_psd_readme_example(client):
    assert client.get("/health/ping").json() == {"pong": "OK"}
    write = client.post(
        "/v1/write",
        json={"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10, "ts1": 1496539746, "ts2": 1496539747},
    )
    assert (write.status_code, write.text) == (200, "ok")
    got = client.post("/v1/mumt_query/all/1496539746/1496539747", data={"things": "steps", "ids": "1"})
    assert got.json() == {"data": {"1": {"_atids": [2], "steps": 10}}}
