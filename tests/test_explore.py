"""``python -m unimodal_free.explore``: the page shows exactly the search command's ranking, a click re-queries by
the item's cached embedding, hostile requests and uploads are one JSON line each and the server keeps answering,
and the page in a real browser (Debian's chromium, headless, under selenium) queries by text, picture and
recording and shows hostile captions and cards as text."""

import http.client
import io
import json
import shutil
import socket
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from helpers import NUM_TRIPLES, assert_ranked_by, folder_gallery, triple
from unimodal_free.embedder import Embedder
from unimodal_free.explore.__main__ import build, main, parse_args
from unimodal_free.explore.api import PAGE_SIZE, UPLOAD_MAX_BYTES
from unimodal_free.explore.card import card_summary
from unimodal_free.explore.server import ExploreServer
from unimodal_free.search.ranking import rank
from unimodal_free.train import model_folder

HOSTILE_CAPTION = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> a red & "quoted" thing'
HOSTILE_CARD_LINE = '- **Corpus**: <img src=x onerror="window.__pwned=3"> the hostile card line'


@pytest.fixture(scope="module")
def explore_setup(setup, tmp_path_factory):
    """A model folder (with a hostile line on its card) and a folder gallery of 12 pictures (two pages),
    6 recordings and 7 captions, one of them hostile."""
    root = tmp_path_factory.mktemp("explore")
    folder = root / "model"
    assert model_folder.main([str(setup["export"]), str(folder)]) == 0
    card = folder / "README.md"
    text = card.read_text()
    card.write_text(text.replace("## What it was trained on\n\n", f"## What it was trained on\n\n{HOSTILE_CARD_LINE}\n"))
    gallery = folder_gallery(setup, root / "gallery")
    for i in range(NUM_TRIPLES):
        image = triple(setup, i)[0]
        shutil.copy(image, gallery / f"copy{i}.png")
    (gallery / "hostile.txt").write_text(HOSTILE_CAPTION + "\n")
    return {"model": folder, "gallery": gallery}


@pytest.fixture(scope="module")
def server(explore_setup):
    explorer, line = build(parse_args(["--model", str(explore_setup["model"]), "--gallery", str(explore_setup["gallery"]),
                                       "--device", "cpu"]))
    srv = ExploreServer(explorer, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method, path, body=None, headers=None):
    """(status, parsed JSON or raw bytes) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=60)
    hdrs = {"X-Explore": "1"} if body is not None else {}
    conn.request(method, path, body=body, headers={**hdrs, **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.getheader("Content-Type") == "application/json":
        return response.status, json.loads(data)
    return response.status, data


def raw_request(srv, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Send ``head`` (request line + headers) and ``body`` on a socket; the status and JSON of the answer."""
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=30) as s:
        s.sendall(head + body)
        s.shutdown(socket.SHUT_WR)  # nothing more comes: a body shorter than its Content-Length ends here
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head_out, _, payload = data.partition(b"\r\n\r\n")
    return int(head_out.split()[1]), json.loads(payload)


def query(srv, path, body=None):
    status, q = request(srv, "POST" if body is not None else "GET", path, body)
    assert status == 200, q
    return q


def ranking(srv, qid, modality):
    """Every page of a query's ranking in one modality: [(item id, score), ...]."""
    out, page, pages = [], 0, 1
    while page < pages:
        status, r = request(srv, "GET", f"/api/results/{qid}/{modality}/{page}")
        assert status == 200, r
        assert len(r["hits"]) <= PAGE_SIZE
        out += [(h["id"], h["score"]) for h in r["hits"]]
        page, pages = page + 1, r["pages"]
    return out


def one_line_error(status, payload, expected_status):
    assert status == expected_status, (status, payload)
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    assert "\n" not in payload["error"] and "Traceback" not in payload["error"], payload
    return payload["error"]


def wav_bytes(seconds: float, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        t = np.arange(int(seconds * rate)) / rate
        w.writeframes((3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())
    return buf.getvalue()


# ---------------------------------------------------------------- the API


def test_pages_are_the_brute_force_cosine_of_embed(server, explore_setup):
    """Every page of a text query is the ranking of ``Embedder.embed``'s cosine over the gallery's files and
    captions, as the search command ranks it; pictures take two pages."""
    gallery = explore_setup["gallery"]
    explorer = server.explorer
    q = query(server, "/api/query/text", b"a red thing")
    assert q["label"] == "a red thing" and q["results"] == ["image", "speech", "text"]
    embedder = Embedder.load(explore_setup["model"], "cpu")
    z = embedder.embed(["a red thing"])[0]  # (D,)
    for m in ("image", "speech", "text"):
        got = ranking(server, q["query"], m)
        ids = [i for i, item in enumerate(explorer.items) if item.modality == m]
        rows = embedder.embed([gallery / explorer.items[i].source if m != "text" else explorer.items[i].caption
                               for i in ids])  # (N_m, D)
        assert_ranked_by(got, dict(zip(ids, (rows @ z).tolist())), m)
    assert len(ranking(server, q["query"], "image")) == 2 * NUM_TRIPLES > PAGE_SIZE


def test_a_caption_of_unseen_words_carries_the_embedders_warning(server):
    q = query(server, "/api/query/text", "zebra quartz xylophone".encode())
    assert len(q["notes"]) == 1 and "never saw in training" in q["notes"][0], q
    assert query(server, "/api/query/text", b"a red thing")["notes"] == []


def test_a_click_queries_by_the_cached_embedding(server, monkeypatch):
    explorer = server.explorer
    calls = []
    monkeypatch.setattr(Embedder, "embed_elements", lambda *a, **k: calls.append(1))  # any embedding would fail here
    index = next(i for i, item in enumerate(explorer.items) if item.modality == "speech")
    q = query(server, f"/api/query/item/{index}")
    assert q["modality"] == "speech" and q["item"] == index and explorer.items[index].key in q["label"]
    got = ranking(server, q["query"], "speech")
    assert got[0] == (index, pytest.approx(1.0, abs=1e-4))
    expected = rank(explorer.embeddings[index], explorer.embeddings, explorer.item_modalities, ["text"], 100)["text"]
    assert [i for i, _ in ranking(server, q["query"], "text")] == [h.index for h in expected]
    assert calls == []
    status, r = request(server, "GET", f"/api/results/{q['query']}/image/0")
    assert status == 200 and all(h["media"].startswith("data:image/png;base64,") for h in r["hits"])
    status, r = request(server, "GET", f"/api/results/{q['query']}/speech/0")
    assert all(h["media"].startswith("data:audio/wav;base64,") for h in r["hits"])


def test_an_uploaded_picture_finds_itself_and_a_long_recording_is_cut(server, setup):
    image = triple(setup, 3)[0]
    q = query(server, "/api/query/image", image.read_bytes())
    assert q["label"].startswith("uploaded picture, ")
    top = ranking(server, q["query"], "image")[0]
    assert server.explorer.items[top[0]].source in (image.name, "copy3.png") and top[1] == pytest.approx(1.0, abs=1e-4)

    max_s = server.explorer.embedder.cfg.data.max_speech_seconds
    long = wav_bytes(600, 8000)  # 10 minutes at 8 kHz: 9.6 MB, under the cap; only max_speech_seconds are decoded
    assert len(long) < UPLOAD_MAX_BYTES
    started = time.perf_counter()
    q = query(server, "/api/query/speech", long)
    assert f"{max_s:.1f} s used" in q["label"], q
    assert time.perf_counter() - started < 30
    assert ranking(server, q["query"], "speech")


def test_the_card_and_the_gallery_on_the_info(server, setup):
    status, info = request(server, "GET", "/api/info")
    assert status == 200
    card = info["card"]
    assert card["step"] == 7 and card["which"] == "teacher"
    assert HOSTILE_CARD_LINE.replace("**", "").lstrip("- ") in card["trained_on"]  # a string: the page shows it as text
    assert any(line.startswith("Captions: a sentencepiece vocabulary") for line in card["trained_on"])
    assert card["retrieval_note"].startswith("No retrieval eval is recorded")
    assert info["gallery"]["counts"] == {"image": 2 * NUM_TRIPLES, "speech": NUM_TRIPLES, "text": NUM_TRIPLES + 1}
    assert info["upload_max_bytes"] == UPLOAD_MAX_BYTES == 20 << 20
    bare = card_summary(Embedder.load(setup["export"], "cpu"))  # a model.safetensors: no folder, no card
    assert bare["card"].startswith("no model card") and bare["step"] == 7 and bare["trained_on"] == []


HOSTILE_PATHS = ["/../../../../etc/passwd", "/etc/passwd", "//etc/passwd", "/page.js/../../../../etc/passwd",
                 "/api/query/item/../../../../etc/passwd", "/api/query/item//etc/passwd", "/api/query/item/%2e%2e%2fetc",
                 "/api/query/item/-1", "/api/query/item/99999", "/api/query/item/1.png",
                 "/api/results/../../../etc/passwd/image/0", "/api/results/0123456789abcdef0123456789abcdef/image/0",
                 "/api/results/{qid}/../../../../etc/passwd", "/api/results/{qid}/image/..%2f..%2fetc%2fpasswd",
                 "/api/results/{qid}//etc/passwd/0", "/api/results/{qid}/image/99", "/api/results/{qid}/audio/0",
                 "/api/info/../../../etc/passwd", "/.unimodal_free-search", "/hostile.txt", "/img0.png"]


def test_hostile_paths_are_one_json_line_and_the_server_goes_on(server):
    qid = query(server, "/api/query/text", b"a blue thing")["query"]
    for path in HOSTILE_PATHS:
        status, payload = request(server, "GET", path.replace("{qid}", qid))
        error = one_line_error(status, payload, 404)
        assert "root:" not in error
    for path in ("/api/query/../../../tmp/x", "/api/query/item/3", "/api/query//etc/passwd", "/api/query/text/../image"):
        status, payload = request(server, "POST", path, b"x")
        one_line_error(status, payload, 404)
    assert request(server, "GET", "/api/info")[0] == 200


def test_hostile_uploads_are_one_json_line_and_the_server_goes_on(server):
    port = server.server_address[1]
    # a 30-minute 16 kHz int16 recording: its Content-Length (57.6 MB) is refused before a byte of the body is read
    head = wav_bytes(0, 16000)[:44]
    claimed = 44 + 30 * 60 * 16000 * 2
    status, payload = raw_request(server, (f"POST /api/query/speech HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                                           f"X-Explore: 1\r\nContent-Length: {claimed}\r\n\r\n").encode(), head)
    assert "over the cap of 20,971,520 bytes" in one_line_error(status, payload, 413)
    status, payload = raw_request(server, f"POST /api/query/image HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Explore: 1\r\n\r\n".encode())
    assert "Content-Length" in one_line_error(status, payload, 411)
    status, payload = raw_request(server, (f"POST /api/query/image HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                                           "X-Explore: 1\r\nContent-Length: 1000\r\n\r\n").encode(), b"0123456789")
    assert "the body ended after 10 of 1,000 bytes" in one_line_error(status, payload, 400)
    error = one_line_error(*request(server, "POST", "/api/query/image", b"this is not a picture\n" * 50), 400)
    assert error.startswith("uploaded image: image: "), error
    one_line_error(*request(server, "POST", "/api/query/speech", (Path(__file__)).read_bytes()), 400)
    one_line_error(*request(server, "POST", "/api/query/text", b"\xff\xfe not utf-8"), 400)
    one_line_error(*request(server, "POST", "/api/query/text", b"  \n "), 400)
    one_line_error(*request(server, "POST", "/api/query/text", b"a red thing", {"X-Explore": "0"}), 403)
    one_line_error(*request(server, "GET", "/api/info", headers={"Host": "attacker.example:8765"}), 403)
    one_line_error(*request(server, "DELETE", "/api/info"), 501)
    assert request(server, "GET", "/api/info")[0] == 200


def test_a_non_loopback_host_warns_and_a_taken_port_is_one_line(explore_setup, monkeypatch, capsys):
    args = ["--model", str(explore_setup["model"]), "--gallery", str(explore_setup["gallery"]), "--device", "cpu"]
    monkeypatch.setattr(ExploreServer, "serve_forever", lambda self: None)  # start, print, stop at once
    assert main([*args, "--host", "0.0.0.0", "--port", "0"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: listening on 0.0.0.0")]
    assert len(warnings) == 1 and "explorer: http://0.0.0.0:" in captured.out
    assert "0 items embedded from 0 of" in captured.out  # the gallery cache of the module's server: nothing embedded
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main([*args, "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --host 127.0.0.1 --port ") and "\n" not in err, err


def test_the_page_assets_are_package_data():
    root = Path(__file__).resolve().parents[1]
    text = (root / "pyproject.toml").read_text()
    for name in ("page.html", "page.js", "page.css"):
        assert (root / "unimodal_free" / "explore" / name).is_file() and f"explore/{name}" in text
    js = (root / "unimodal_free" / "explore" / "page.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js


# ---------------------------------------------------------------- a real browser


@pytest.fixture(scope="module")
def browser():
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.fail("chromium and chromedriver are not installed: apt-get install chromium chromium-driver "
                    "(launch/setup.sh does as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, what, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=f"waiting for {what}")


def shown(driver, modality):
    """[(item id, score)] of the cards shown in one modality's section."""
    cards = driver.find_elements("css selector", f'section.modality[data-modality="{modality}"] .hit')
    return [(int(c.get_attribute("data-id")), float(c.get_attribute("data-score"))) for c in cards]


def new_query(driver, previous):
    return wait_for(driver, lambda d: (d.find_element("tag name", "body").get_attribute("data-query") or previous) != previous
                    and d.find_element("tag name", "body").get_attribute("data-query"), "a new query's results")


@pytest.mark.slow
def test_the_page_in_chromium(server, browser, setup, tmp_path):
    driver, explorer = browser, server.explorer
    driver.get(server.url)
    wait_for(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1", "the page")
    assert "step 7" in driver.find_element("id", "model-title").text
    card_lines = [li.text for li in driver.find_elements("css selector", "#trained-on li")]
    assert HOSTILE_CARD_LINE.replace("**", "").lstrip("- ") in card_lines  # shown as text, not as an element

    driver.find_element("id", "text-input").send_keys("a red thing")
    driver.find_element("id", "text-search").click()
    qid = new_query(driver, None)
    assert driver.find_element("id", "query-label").text == "text: a red thing"
    for m in ("image", "speech", "text"):
        assert shown(driver, m) == [(i, pytest.approx(s, abs=1e-4)) for i, s in ranking(server, qid, m)[:PAGE_SIZE]], m
    captions = [c.text for c in driver.find_elements("css selector", '[data-modality="text"] .caption')]
    assert HOSTILE_CAPTION in captions  # the whole caption as text: no element made of it
    assert driver.execute_script("return window.__pwned === undefined && document.querySelectorAll('.hit script, .hit img[src=x]').length === 0")
    driver.find_element("css selector", '[data-modality="image"] button.next').click()
    wait_for(driver, lambda d: d.find_element("css selector", '[data-modality="image"]').get_attribute("data-page") == "1", "page 2")
    assert shown(driver, "image") == [(i, pytest.approx(s, abs=1e-4)) for i, s in ranking(server, qid, "image")[PAGE_SIZE:]]
    driver.save_screenshot(str(tmp_path / "text.png"))

    # a click on a recording makes it the query: the label and the results change
    before = shown(driver, "text")
    card = driver.find_elements("css selector", '[data-modality="speech"] .hit')[1]
    clicked = int(card.get_attribute("data-id"))
    card.find_element("css selector", ".caption").click()
    qid = new_query(driver, qid)
    assert driver.find_element("id", "query-label").text == f"speech: gallery item {explorer.items[clicked].key}: {explorer.captions[clicked]}"
    assert shown(driver, "speech")[0] == (clicked, pytest.approx(1.0, abs=1e-4))
    assert shown(driver, "text") != before

    # an uploaded picture finds itself first
    image = triple(setup, 2)[0]
    driver.find_element("id", "file-input").send_keys(str(image))
    qid = new_query(driver, qid)
    assert driver.find_element("id", "query-label").text.startswith("image: uploaded picture")
    top = shown(driver, "image")[0]
    assert explorer.items[top[0]].source in (image.name, "copy2.png") and top[1] == pytest.approx(1.0, abs=1e-4)
    driver.save_screenshot(str(tmp_path / "upload.png"))

    # a non-picture upload is a message on the page, and the page goes on
    bad = tmp_path / "not-a-picture.png"
    bad.write_bytes(b"no picture here\n" * 10)
    driver.find_element("id", "file-input").send_keys(str(bad))
    wait_for(driver, lambda d: d.find_element("id", "error").text, "the error line")
    assert driver.find_element("id", "error").text.startswith("uploaded image: image: ")

    # recording: chromium's fake microphone (a beep), PCM from Web Audio, sent as a WAV made in the page
    max_s = explorer.embedder.cfg.data.max_speech_seconds  # the tiny config's 2 s: the page stops by itself then
    driver.find_element("id", "record").click()
    time.sleep(max_s / 2)
    driver.find_element("id", "record").click()  # stop
    qid = new_query(driver, qid)
    label = driver.find_element("id", "query-label").text
    assert label.startswith("speech: uploaded recording, ") and " s used" in label, label
    seconds = float(label.split("recording, ")[1].split(" s used")[0])
    assert 0.2 * max_s <= seconds < max_s, label
    assert driver.find_element("id", "recording-state").text.startswith("recorded ")
    assert len(shown(driver, "speech")) == NUM_TRIPLES and not driver.find_element("id", "error").text
    driver.save_screenshot(str(tmp_path / "recording.png"))
